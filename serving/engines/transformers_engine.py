"""The transformers engine: the CPU default, float32, PEFT multi-adapter, continuous batching.

The asyncio side only tokenises, queues and relays: the model belongs to ``DecodeLoop``'s thread,
which batches every running answer into one forward per step (docs/measurements.md: a bare loop
with a KV cache and ``logits_to_keep=1`` ran ~2x ``model.generate`` at batch 64 on this CPU).
Chunks come back to the caller's event loop via ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from common.decoding.attention import use_gqa_attention
from common.end_of_turn import end_of_turn_ids
from common.lm_head import compute_float32_lm_head_in_blocks, keep_lm_head_input_contiguous
from serving.engines.decode_loop import DecodeLoop, KVBudget, Submission
from serving.engines.model_engine import (
    SMOKE_MESSAGES,
    ModelEngine,
    check_prompt_fits,
    collect_outputs,
    smoke_request,
)
from serving.engines.peft_adapters import AdapterSet
from serving.engines.protocol import (
    BASE,
    AdapterRejected,
    EngineFailure,
    EngineStats,
    GenerationChunk,
    GenerationOutput,
    GenerationRequest,
    InvalidRequest,
    UnknownAdapter,
)

if TYPE_CHECKING:
    from serving.settings import ServingSettings

logger = logging.getLogger(__name__)

SmokeKey = tuple[tuple[int, ...], int]  # a smoke prompt's tokens, and its max new tokens


class TransformersEngine(ModelEngine):
    name = "transformers"

    def __init__(
        self,
        model_dir: str | Path,
        device: str = "cpu",
        dtype: str = "float32",
        max_batch_size: int = 64,
        max_queue: int | None = None,
        smoke_tokens: int = 16,
        kv_cache_budget_mib: float = 2048.0,
        prefill_chunk_tokens: int = 512,
        fold_adapters: bool = True,
    ) -> None:
        super().__init__(model_dir, dtype, max_batch_size, max_queue, smoke_tokens)
        self.device = device
        self.kv_cache_budget_mib = kv_cache_budget_mib
        self.prefill_chunk_tokens = prefill_chunk_tokens
        self.fold_adapters = fold_adapters
        self._loop: DecodeLoop | None = None
        self._adapters: AdapterSet | None = None
        self._draining: set[str] = set()
        self._max_positions = 0
        # Smoke answers decoded in the same pause as their adapter's load, until the smoke
        # check asks (a failed decode is kept as its exception), by (adapter, prompt, max).
        self._smoke_ready: dict[tuple[str, SmokeKey], list[int] | EngineFailure] = {}
        # The base model's greedy answers to smoke prompts (token ids): the drafts an adapter's
        # smoke check verifies in one forward (serving.engines.smoke_decode).
        self._base_answers: dict[SmokeKey, list[int]] = {}

    @classmethod
    def from_settings(cls, settings: ServingSettings) -> TransformersEngine:
        from common.embedded_model import resolve_model_dir

        return cls(
            resolve_model_dir(settings.model_dir),
            device=settings.device,
            dtype=settings.dtype,
            max_batch_size=settings.max_batch_size,
            kv_cache_budget_mib=settings.kv_cache_budget_mib,
            prefill_chunk_tokens=settings.prefill_chunk_tokens,
            fold_adapters=settings.fold_adapters,
        )

    # ---- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self._load)
        assert self._loop is not None
        self._loop.start()
        # Now, on an idle engine, rather than in the first adapter's smoke check under load.
        await self._smoke_answer(smoke_request(BASE, self.smoke_tokens))

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = torch.device(self.device)  # fails here on a malformed device string
        self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        # The loop decodes on its own tokenizer: a Rust tokenizer shared across threads can
        # fail with "Already borrowed".
        loop_tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        model = AutoModelForCausalLM.from_pretrained(
            self.model_dir, dtype=getattr(torch, self.dtype)
        )
        model = model.to(device).eval()
        use_gqa_attention(model)
        keep_lm_head_input_contiguous(model)  # prefill with an adapter loaded: see common.lm_head
        compute_float32_lm_head_in_blocks(model)  # 25-45 % off a float32 head: common.lm_head
        self._max_positions = int(getattr(model.config, "max_position_embeddings", 0) or 1 << 30)
        self._adapters = AdapterSet(model, fold=self.fold_adapters)
        self._loop = DecodeLoop(
            self._adapters,
            loop_tokenizer,
            eos_ids=_eos_ids(model, self._tokenizer),
            pad_id=_pad_id(self._tokenizer),
            max_batch_size=self.max_batch_size,
            max_queue=self.max_queue,
            max_positions=self._max_positions,
            device=device,
            kv_budget=KVBudget(
                bytes_per_token=_kv_bytes_per_token(model),
                limit_bytes=int(self.kv_cache_budget_mib * 1024 * 1024),
            ),
            prefill_chunk_tokens=self.prefill_chunk_tokens,
        )
        logger.info(
            "transformers engine: %s (%s, %s), max batch %d",
            self.model_dir,
            self.device,
            self.dtype,
            self.max_batch_size,
        )

    async def stop(self) -> None:
        if self._loop is not None:
            await asyncio.to_thread(self._loop.stop)

    # ---- generation -------------------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> list[GenerationOutput]:
        return await collect_outputs(request, self._stream(request))

    async def _stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk | int]:
        """Prompt token count first, then the chunks of all n answers as they decode."""
        loop = self._require_loop()
        self._check(request)
        prompt = self._encode(request.messages)
        check_prompt_fits(prompt, self._max_positions)
        max_new = min(request.max_tokens, self._max_positions - len(prompt) - 1)
        queue: asyncio.Queue[list[GenerationChunk] | BaseException] = asyncio.Queue()
        aio = asyncio.get_running_loop()

        def emit(item: list[GenerationChunk] | BaseException) -> None:
            try:
                aio.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # caller's event loop closed: nobody left to tell
                sub.cancelled = True

        sub = Submission(request=request, prompt_ids=prompt, max_new=max_new, emit=emit)
        if not loop.fits_alone(sub):
            raise InvalidRequest(
                f"n={request.n} answers of up to {sub.final_length} tokens (prompt "
                f"{len(prompt)} + max_tokens {max_new}) need more KV cache than this server's "
                f"budget of {self.kv_cache_budget_mib:g} MiB: shorten the prompt or lower "
                "max_tokens or n"
            )
        loop.submit(sub)
        yield len(prompt)
        open_answers = request.n
        try:
            while open_answers:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                for chunk in item:
                    open_answers -= chunk.finish_reason is not None
                    yield chunk
        finally:
            # Client went away (or failed): stop decoding its answers at the next step.
            sub.cancelled = open_answers > 0

    async def _smoke_answer(self, request: GenerationRequest) -> str:
        """Decoded alone between two batch steps, from the base model's answer as a draft: a
        forward or a few even under full load, where riding in the batch took one busy step
        per token. After a load, the answer is already there (see ``load_adapter``)."""
        loop = self._require_loop()
        self._check(request)
        prompt = self._encode(request.messages)
        key = (tuple(prompt), request.max_tokens)
        ready = self._smoke_ready.pop((request.adapter, key), None)
        if ready is None and request.adapter == BASE:
            ready = self._base_answers.get(key)
        if ready is None:
            future = loop.call(lambda: self._smoke_tokens(loop, request.adapter, key))
            ready = cast("list[int] | EngineFailure", await asyncio.wrap_future(future))
        if isinstance(ready, EngineFailure):
            raise ready
        tokens = ready
        if request.adapter == BASE:
            self._base_answers[key] = tokens
        return str(self._tokenizer.decode(tokens, skip_special_tokens=True))

    def _smoke_tokens(
        self, loop: DecodeLoop, adapter: str, key: SmokeKey
    ) -> list[int] | EngineFailure:
        """On the loop thread: ``adapter``'s greedy answer, or why it could not be decoded."""
        prompt, max_new = key
        try:
            return loop.smoke_decode(
                list(prompt), adapter, max_new, self._base_answers.get(key, ())
            )
        except EngineFailure as exc:
            return exc

    def _check(self, request: GenerationRequest) -> None:
        if request.n < 1 or request.n > self.max_batch_size:
            raise InvalidRequest(f"n={request.n} outside 1..{self.max_batch_size}")
        if request.max_tokens < 1:
            raise InvalidRequest("max_tokens must be at least 1")
        if request.adapter != BASE and (
            request.adapter in self._draining or request.adapter not in self.loaded_adapters()
        ):
            raise UnknownAdapter(f"adapter {request.adapter} is not loaded")

    # ---- adapters ---------------------------------------------------------------------------

    async def load_adapter(self, version: str, path: Path) -> None:
        loop, adapters = self._require_loop(), self._adapters
        assert adapters is not None
        if not Path(path).is_dir():
            raise AdapterRejected(f"{path} is not a directory")
        # The smoke check comes next: its answer is decoded in this same pause, since under
        # load each pause first waits for the running step to end (about half a second at
        # 128 rows of SmolLM2 in float32 on 2 cores).
        key = (tuple(self._encode(SMOKE_MESSAGES)), self.smoke_tokens)

        def load_and_answer() -> list[int] | EngineFailure:
            adapters.load(version, Path(path))
            return self._smoke_tokens(loop, version, key)

        self._smoke_ready[(version, key)] = await asyncio.wrap_future(loop.call(load_and_answer))
        self._draining.discard(version)

    async def unload_adapter(self, version: str) -> None:
        """Refuse new requests for ``version``, let its running answers finish, then drop it."""
        loop, adapters = self._require_loop(), self._adapters
        assert adapters is not None
        if version == BASE:
            raise ValueError("the base model cannot be unloaded")
        self._draining.add(version)
        self._smoke_ready = {k: v for k, v in self._smoke_ready.items() if k[0] != version}
        try:
            await asyncio.wrap_future(
                loop.call(
                    lambda: _unload_on_loop(loop, adapters, version),
                    ready=lambda: version not in loop.versions_in_use(),
                )
            )
        finally:
            self._draining.discard(version)

    def loaded_adapters(self) -> list[str]:
        return self._adapters.versions() if self._adapters is not None else []

    def stats(self) -> EngineStats:
        return self._loop.stats() if self._loop is not None else EngineStats()

    def _require_loop(self) -> DecodeLoop:
        if self._loop is None:
            raise EngineFailure("engine not started")
        return self._loop


def _unload_on_loop(loop: DecodeLoop, adapters: AdapterSet, version: str) -> None:
    adapters.unload(version)
    loop.forget_prefix(version)  # its keys and values came from the adapter


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """The ids an answer stops at (``common.end_of_turn``, as the vLLM engine and the learner's
    rollouts): the generation config's (which transformers derives from the model config when
    the directory has none), the tokenizer's EOS, the template's."""
    return set(end_of_turn_ids(tokenizer, model.generation_config))


def _pad_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id
    return int(pad if pad is not None else tokenizer.eos_token_id)


def _kv_bytes_per_token(model: Any) -> int:
    """KV cache bytes one token of one row takes: layers x (K and V) x KV heads x head dim."""
    config = model.config
    heads = getattr(config, "num_attention_heads", 1)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    element = next(model.parameters()).element_size()
    return int(config.num_hidden_layers * 2 * kv_heads * head_dim * element)
