"""The engine loop: one thread owns the model and decodes every running answer together.

Why one file (over 400 lines): everything here runs on the one engine thread and mutates its
state (running batch, KV cache, admission budget); split, the one-owner rule would span files.

Continuous batching at step granularity (Orca, Yu et al., OSDI 2022): each iteration admits the
requests that arrived meanwhile (prefill, then join the running batch's KV cache), runs one
decode step for all running rows with ``logits_to_keep=1``, samples each row with its own
parameters, and drops the rows that finished. Requests never wait for a whole batch to end.
Control work that mutates the model (adapter load/unload) runs between steps on the same thread.

Memory and fairness (the batch's KV cache is left-padded, so every row costs the longest row's
length): a request is admitted only while the running batch, the prompts being prefilled and it
fit the KV budget at their final length (``KVBudget``); what does not fit waits in the queue, in
order, and a request that could never fit is refused before it queues. Prompts longer than one
prefill chunk are prefilled a chunk per iteration, between decode steps (chunked prefill, as in
Sarathi, Agrawal et al., OSDI 2024), so one long prompt delays the running answers by at most a
chunk's worth of compute per step instead of stalling them for its whole prefill.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch
from prometheus_client import Counter, Gauge, Histogram
from transformers import DynamicCache

from common.decoding.kv_slab import KVSlab, layers_of
from common.decoding.sampling import make_generator, sample_rows
from common.decoding.steps import decode_step, pad_left, positions_from_mask
from serving.engines.detokenize import StreamDecoder
from serving.engines.peft_adapters import AdapterSet
from serving.engines.prefix_cache import Prefix, PrefixCache
from serving.engines.protocol import (
    EngineFailure,
    EngineOverloaded,
    EngineStats,
    FinishReason,
    GenerationChunk,
    GenerationRequest,
)
from serving.engines.smoke_decode import smoke_decode

logger = logging.getLogger(__name__)

BATCH_ROWS = Histogram(
    "rlhf_serving_engine_batch_rows",
    "sequences decoded together per engine step",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
STEP_SECONDS = Histogram("rlhf_serving_engine_step_seconds", "duration of one engine step")
KV_RESERVED = Gauge(
    "rlhf_serving_engine_kv_reserved_bytes",
    "KV cache the running and prefilling answers may grow to (their final length x rows)",
)
PREFIX_HIT_TOKENS = Counter(
    "rlhf_serving_engine_prefix_cache_hit_tokens_total",
    "prompt tokens not prefilled because a cached prefix held their keys and values",
)
PREFILL_CHUNKS = Counter(
    "rlhf_serving_engine_prefill_chunks_total", "prompt chunks prefilled between decode steps"
)


@dataclass(frozen=True)
class KVBudget:
    """KV cache bytes per token and row, and the most the batch may reserve."""

    bytes_per_token: int
    limit_bytes: int

    def need(self, rows: int, length: int) -> int:
        return rows * length * self.bytes_per_token


@dataclass(eq=False)
class Submission:
    """One request in flight; ``emit`` hands a list of chunks (or an exception) to its caller."""

    request: GenerationRequest
    prompt_ids: list[int]
    max_new: int
    emit: Callable[[list[GenerationChunk] | BaseException], None]
    cancelled: bool = False
    open_rows: int = 0

    @property
    def final_length(self) -> int:
        """Tokens each of its rows may reach: what the KV budget reserves per row."""
        return len(self.prompt_ids) + self.max_new


@dataclass(eq=False)
class _Prefill:
    """A long prompt being prefilled a chunk at a time into its own cache."""

    sub: Submission
    cache: DynamicCache = field(default_factory=DynamicCache)
    done: int = 0


@dataclass(eq=False)
class Row:
    sub: Submission
    index: int
    decoder: StreamDecoder
    generator: torch.Generator
    next_token: int = 0
    position: int = 0
    count: int = 0
    finish: FinishReason | None = None
    failed: str | None = None


@dataclass(eq=False)
class _Command:
    fn: Callable[[], Any]
    ready: Callable[[], bool]
    future: Future[Any] = field(default_factory=Future)


class DecodeLoop:
    def __init__(
        self,
        adapters: AdapterSet,
        tokenizer: Any,
        eos_ids: set[int],
        pad_id: int,
        max_batch_size: int,
        max_queue: int,
        max_positions: int,
        device: torch.device | str = "cpu",
        kv_budget: KVBudget | None = None,
        prefill_chunk_tokens: int = 512,
    ) -> None:
        self._adapters = adapters
        self._device = torch.device(device)  # where the model's weights, KV cache and logits live
        self._tok = tokenizer
        self._eos = eos_ids
        self._pad = pad_id
        self._max_batch = max_batch_size
        self._max_queue = max_queue
        self._max_positions = max_positions
        self._budget = kv_budget or KVBudget(bytes_per_token=0, limit_bytes=0)
        self._chunk = prefill_chunk_tokens
        self._prefilling: list[_Prefill] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pending: collections.deque[Submission] = collections.deque()
        self._commands: list[_Command] = []
        self._rows: list[Row] = []
        self._prefixes = PrefixCache()
        self._slab: KVSlab | None = None  # made at the first join: it learns the layer count
        self._admitting: list[Submission] = []  # taken from the queue, not yet running
        self._stopping = False
        self._stats = EngineStats()
        self._thread = threading.Thread(target=self._run, name="engine-loop", daemon=True)

    # ---- called from other threads -------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        with self._lock:
            self._stopping = True
        self._wake.set()
        self._thread.join(timeout)

    def fits_alone(self, sub: Submission) -> bool:
        """Whether ``sub`` could ever be admitted (an empty batch, the whole budget)."""
        if not self._budget.limit_bytes:
            return True
        need = self._budget.need(sub.request.n, sub.final_length)
        return need <= self._budget.limit_bytes

    def submit(self, sub: Submission) -> None:
        with self._lock:
            if self._stopping:
                raise EngineFailure("engine is stopped")
            queued = sum(s.request.n for s in self._pending)
            if sub.request.priority:
                self._pending.appendleft(sub)  # next in, as soon as a row is free
            elif queued + sub.request.n > self._max_queue:
                raise EngineOverloaded(f"engine queue full ({queued} answers waiting)")
            else:
                self._pending.append(sub)
        self._wake.set()

    def call(self, fn: Callable[[], Any], ready: Callable[[], bool] = lambda: True) -> Future[Any]:
        """Run ``fn`` on the loop thread between steps, once ``ready()`` holds there."""
        command = _Command(fn, ready)
        with self._lock:
            if self._stopping:
                command.future.set_exception(EngineFailure("engine is stopped"))
                return command.future
            self._commands.append(command)
        self._wake.set()
        return command.future

    def versions_in_use(self) -> set[str]:
        """Adapter versions of running or queued requests (read on the loop thread)."""
        with self._lock:
            queued = {s.request.adapter for s in self._pending}
        prefilling = {p.sub.request.adapter for p in self._prefilling}
        return queued | prefilling | {r.sub.request.adapter for r in self._rows}

    def stats(self) -> EngineStats:
        with self._lock:
            self._stats.queue_depth = sum(s.request.n for s in self._pending)
        self._stats.running = len(self._rows)
        return EngineStats(**vars(self._stats))

    # ---- the loop thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            with torch.inference_mode():
                while not self._stopping:
                    self._run_commands()
                    try:
                        self._admit()
                        self._prefill_chunk()
                        if self._rows:
                            self._step()
                    except Exception as exc:
                        # A failed forward fails the requests it carried, not the engine.
                        logger.exception(
                            "engine step failed; failing %d answers",
                            len(self._rows) + len(self._admitting),
                        )
                        self._fail_running(EngineFailure(f"engine step failed: {exc}"))
                    if not self._rows and not self._prefilling:
                        self._wake.wait(timeout=0.5)
                        self._wake.clear()
        except BaseException as exc:  # the loop must never die silently
            logger.exception("engine loop crashed")
            self._fail_all(EngineFailure(f"engine loop crashed: {exc}"))
            raise
        self._fail_all(EngineFailure("engine stopped"))

    def _run_commands(self) -> None:
        with self._lock:
            commands, self._commands = self._commands, []
        waiting = []
        for command in commands:
            if command.future.cancelled():
                continue
            if not command.ready():
                waiting.append(command)
                continue
            try:
                result = command.fn()
            except BaseException as exc:
                _settle(command.future, exc=exc)
            else:
                _settle(command.future, result=result)
        if waiting:
            with self._lock:
                self._commands[:0] = waiting

    def _reserved(self, extra: list[Submission]) -> tuple[int, int]:
        """(rows, longest final length) of the running batch, the prefills and ``extra``."""
        subs = {r.sub: None for r in self._rows} | {p.sub: None for p in self._prefilling}
        subs |= {s: None for s in extra}
        rows = len(self._rows) + sum(p.sub.request.n for p in self._prefilling)
        rows += sum(s.request.n for s in extra)
        return rows, max((s.final_length for s in subs), default=0)

    def _fits(self, taken: list[Submission], sub: Submission) -> bool:
        rows, longest = self._reserved([*taken, sub])
        if rows > self._max_batch:
            return False
        return not self._budget.limit_bytes or (
            self._budget.need(rows, longest) <= self._budget.limit_bytes
        )

    def _take_pending(self) -> list[Submission]:
        """Queued requests that fit beside the running ones, in arrival order (the head waits
        rather than being overtaken, so a long request is not starved by short ones)."""
        taken: list[Submission] = []
        with self._lock:
            while self._pending and (
                self._pending[0].cancelled or self._fits(taken, self._pending[0])
            ):
                sub = self._pending.popleft()
                if not sub.cancelled:
                    taken.append(sub)
        KV_RESERVED.set(self._budget.need(*self._reserved(taken)))
        return taken

    def _admit(self) -> None:
        taken = self._take_pending()
        self._prefilling += [_Prefill(s) for s in taken if len(s.prompt_ids) > self._chunk]
        self._admitting = [s for s in taken if len(s.prompt_ids) <= self._chunk]
        groups: dict[Prefix | None, list[Submission]] = {}
        for sub in self._admitting:
            prefix = self._prefixes.lookup(sub.request.adapter, sub.prompt_ids)
            groups.setdefault(prefix, []).append(sub)
        for prefix, subs in groups.items():
            self._prefill(subs, prefix)
        self._admitting = []

    def _prefill(self, subs: list[Submission], prefix: Prefix | None) -> None:
        """Prefill prompts (after ``prefix``, whose keys and values are cached) in one forward
        and start their rows."""
        skip = len(prefix) if prefix is not None else 0
        tails = [s.prompt_ids[skip:] for s in subs]
        width = max(len(t) for t in tails)
        ids, tail_mask = pad_left(tails, self._pad)  # (S, T)
        mask = torch.cat([torch.ones((len(subs), skip), dtype=torch.long), tail_mask], dim=1)
        ids, mask = ids.to(self._device), mask.to(self._device)  # mask (S, skip + T)
        positions = positions_from_mask(mask)[:, skip:]  # (S, T)
        cache = DynamicCache()
        if prefix is not None:
            rows = len(subs)
            cache = DynamicCache(
                ddp_cache_data=[
                    (k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in prefix.kv
                ]
            )
            PREFIX_HIT_TOKENS.inc(skip * rows)
        out = self._adapters.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
            **self._adapters.forward_kwargs([s.request.adapter for s in subs]),
        )
        if prefix is None:
            self._offer_prefixes(subs, [width - len(t) for t in tails], out.past_key_values)
        self._start_rows(subs, out.logits[:, -1, :], out.past_key_values, mask)

    def _offer_prefixes(self, subs: list[Submission], pads: list[int], cache: Any) -> None:
        """Let the prefix cache learn from prompts prefilled in full (row i starts at pads[i])."""
        kv = layers_of(cache)

        def rows_prefix(i: int) -> Callable[[int], list[tuple[torch.Tensor, torch.Tensor]]]:
            first = pads[i]
            return lambda n: [
                (k[i : i + 1, :, first : first + n], v[i : i + 1, :, first : first + n])
                for k, v in kv
            ]

        for i, sub in enumerate(subs):
            self._prefixes.offer(sub.request.adapter, sub.prompt_ids, rows_prefix(i))

    def forget_prefix(self, adapter: str) -> None:
        """Drop ``adapter``'s cached prefix (its adapter is being unloaded; loop thread)."""
        self._prefixes.forget(adapter)

    def _prefill_chunk(self) -> None:
        """Prefill the next chunk of the oldest long prompt; start its rows when it is done."""
        self._prefilling = [p for p in self._prefilling if not p.sub.cancelled]
        if not self._prefilling:
            return
        job = self._prefilling[0]
        prompt = job.sub.prompt_ids
        end = min(job.done + self._chunk, len(prompt))
        ids = self._index([prompt[job.done : end]])  # (1, C)
        out = self._adapters.model(
            input_ids=ids,
            attention_mask=torch.ones((1, end), dtype=torch.long, device=self._device),
            position_ids=self._index([list(range(job.done, end))]),
            past_key_values=job.cache,
            use_cache=True,
            logits_to_keep=1,
            **self._adapters.forward_kwargs([job.sub.request.adapter]),
        )
        PREFILL_CHUNKS.inc()
        job.cache, job.done = out.past_key_values, end
        if end < len(prompt):
            return
        self._prefilling.pop(0)
        self._admitting = [job.sub]
        mask = torch.ones((1, end), dtype=torch.long, device=self._device)
        self._start_rows([job.sub], out.logits[:, -1, :], job.cache, mask)
        self._admitting = []

    def _start_rows(
        self, subs: list[Submission], last_logits: torch.Tensor, cache: Any, mask: torch.Tensor
    ) -> None:
        """Turn prefilled prompts into running rows: sample each row's first token and join
        the running batch. ``last_logits`` (S, V) and ``mask`` (S, T) have a row per prompt."""
        # One prefill per request; its n answers share it (repeat the row n times).
        repeat = torch.tensor([s.request.n for s in subs])
        expand = torch.repeat_interleave(torch.arange(len(subs)), repeat).to(self._device)  # (R,)
        logits = last_logits[expand]  # (R, V)
        new_rows = [
            Row(
                sub=s,
                index=i,
                decoder=StreamDecoder(self._tok, s.request.stop),
                generator=make_generator(s.request.seed, i),
                position=len(s.prompt_ids),
            )
            for s in subs
            for i in range(s.request.n)
        ]
        for sub in subs:
            sub.open_rows = sub.request.n
        self._accept(new_rows, logits)
        keep = [i for i, r in enumerate(new_rows) if r.finish is None]
        if not keep:
            return
        index = expand[self._index(keep)]  # (K,) the prompt row of each answer still running
        kv = [(k[index], v[index]) for k, v in layers_of(cache)]
        if self._slab is None:
            self._slab = KVSlab(len(kv), self._device)
        self._slab.append(kv, mask[index])
        self._rows += [new_rows[i] for i in keep]

    def _step(self) -> None:
        started = time.perf_counter()
        rows = self._rows
        slab = self._slab
        assert slab is not None and slab.rows == len(rows)
        logits = decode_step(
            self._adapters.model,
            slab,
            self._index([[r.next_token] for r in rows]),  # (B, 1)
            self._index([[r.position] for r in rows]),  # (B, 1)
            **self._adapters.forward_kwargs([r.sub.request.adapter for r in rows]),
        )
        for r in rows:
            r.position += 1
        self._accept(rows, logits)
        dead = [i for i, r in enumerate(rows) if r.finish is not None or r.sub.cancelled]
        if dead:
            self._rows = [rows[i] for i in slab.drop(dead)]
        self._stats.last_batch_size = len(rows)
        self._stats.max_batch_size_seen = max(self._stats.max_batch_size_seen, len(rows))
        BATCH_ROWS.observe(len(rows))
        STEP_SECONDS.observe(time.perf_counter() - started)

    def smoke_decode(
        self, prompt_ids: list[int], adapter: str, max_new: int, draft: Sequence[int] = ()
    ) -> list[int]:
        """Greedy tokens of one prompt decoded alone, outside the batch (run it through ``call``:
        the batch waits meanwhile). A smoke check decodes this way: inside a busy batch its
        16 tokens would take 16 batch steps (seconds); alone, with a draft of the answer, one
        or a few forwards (``serving.engines.smoke_decode``)."""
        return smoke_decode(
            self._adapters,
            prompt_ids,
            adapter,
            max_new,
            eos_ids=self._eos,
            max_positions=self._max_positions,
            device=self._device,
            draft=draft,
        )

    def _index(self, values: list[int] | list[list[int]]) -> torch.Tensor:
        """A long tensor on the model's device (token ids, positions, row indices)."""
        return torch.tensor(values, dtype=torch.long, device=self._device)

    def _accept(self, rows: list[Row], logits: torch.Tensor) -> None:
        """Sample one token per row from ``logits`` (R, V), update each answer, emit chunks."""
        finite = torch.isfinite(logits.sum(dim=-1))  # (R,) any NaN/inf makes the sum non-finite
        if not bool(finite.all()):
            logits = torch.where(finite[:, None], logits, torch.zeros_like(logits))
        tokens = sample_rows(
            logits,
            [r.sub.request.temperature for r in rows],
            [r.sub.request.top_p for r in rows],
            [r.generator for r in rows],
        ).tolist()
        chunks: dict[Submission, list[GenerationChunk]] = {}
        for row, token, ok in zip(rows, tokens, finite.tolist(), strict=True):
            if row.sub.cancelled:
                row.finish = "stop"
                continue
            if not ok:
                row.failed = "non-finite logits"
                row.finish = "stop"
                self._close(row, None, chunks)
                continue
            delta = self._advance(row, token)
            if row.finish is not None:
                self._close(row, delta, chunks)
            elif delta:
                chunks.setdefault(row.sub, []).append(
                    GenerationChunk(index=row.index, delta=delta, completion_tokens=row.count)
                )
        for sub, items in chunks.items():
            if sub.open_rows >= 0:
                sub.emit(items)

    def _advance(self, row: Row, token: int) -> str:
        if token in self._eos:
            row.finish = "stop"
            return row.decoder.finish()
        row.count += 1
        self._stats.tokens_generated_total += 1
        row.next_token = token
        delta = row.decoder.push(token)
        if row.decoder.stopped:
            row.finish = "stop"
        elif row.count >= row.sub.max_new or row.position + 1 >= self._max_positions:
            row.finish = "length"
            delta += row.decoder.finish()
        return delta

    def _close(
        self, row: Row, delta: str | None, chunks: dict[Submission, list[GenerationChunk]]
    ) -> None:
        sub = row.sub
        sub.open_rows -= 1
        if row.failed is not None:
            if sub.open_rows >= 0:
                sub.open_rows = -1  # one failed answer fails the whole request, once
                sub.cancelled = True  # and its other answers stop decoding
                chunks.pop(sub, None)
                sub.emit(EngineFailure(f"{row.failed} (adapter {sub.request.adapter})"))
            return
        assert row.finish is not None
        chunks.setdefault(sub, []).append(
            GenerationChunk(
                index=row.index,
                delta=delta or "",
                finish_reason=row.finish,
                completion_tokens=row.count,
            )
        )

    def _fail_running(self, exc: BaseException) -> None:
        prefilling = [p.sub for p in self._prefilling]
        self._prefilling = []
        for sub in self._admitting + prefilling + list({r.sub: None for r in self._rows}):
            if sub.open_rows >= 0:
                sub.open_rows = -1
                sub.cancelled = True
                sub.emit(exc)
        self._rows, self._admitting = [], []
        if self._slab is not None:
            self._slab.clear()

    def _fail_all(self, exc: BaseException) -> None:
        with self._lock:
            self._stopping = True
            pending, self._pending = list(self._pending), collections.deque()
            commands, self._commands = self._commands, []
        self._admitting += pending
        self._fail_running(exc)
        for command in commands:
            _settle(command.future, exc=exc)


def _settle(future: Future[Any], result: Any = None, exc: BaseException | None = None) -> None:
    """Resolve a command's future unless its caller cancelled it meanwhile."""
    if future.done():
        return
    try:
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
    except Exception:  # cancelled between the check and the set: nobody is waiting
        logger.debug("command future was cancelled", exc_info=True)
