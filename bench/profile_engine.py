"""Where the transformers engine's time goes: one burst of pair requests, profiled on the engine
thread (the figures of docs/architecture.md, "Where a decode step's time goes").

    .venv/bin/python -m bench.profile_engine [--pairs 64] [--max-tokens 64] [--top 15]
        [--dtype float32|bfloat16] [--adapter] [--no-fold]

Prints generated tokens/s, the engine's step count and time, and cProfile's top functions by
own time on the engine thread (torch ops show as their ``torch._C`` entry points). With
``--adapter`` every answer uses a rank-8 LoRA adapter on all linear layers (as the learner makes
them), folded into the weights unless ``--no-fold``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench_serving import add_bench_max_tokens
from bench.serving_load import make_prompts, write_bench_adapter
from schemas.events import ChatMessage
from serving.engines import decode_loop
from serving.engines.protocol import BASE, GenerationRequest
from serving.engines.transformers_engine import TransformersEngine

PROFILE = cProfile.Profile()


def profiled_run(original: Any) -> Any:
    """The engine thread's loop, under the profiler (cProfile sees one thread only)."""

    def run(self: decode_loop.DecodeLoop) -> None:
        PROFILE.enable()
        try:
            original(self)
        finally:
            PROFILE.disable()

    return run


async def burst(args: argparse.Namespace) -> tuple[int, float]:
    from common.embedded_model import materialize_embedded_model

    pairs, tokens = args.pairs, args.max_tokens
    model_dir = materialize_embedded_model()
    engine = TransformersEngine(
        model_dir, dtype=args.dtype, max_batch_size=2 * pairs, fold_adapters=not args.no_fold
    )
    await engine.start()
    version = BASE
    try:
        if args.adapter:
            version = await load_adapter(engine, model_dir)

        def request(prompt: str, max_tokens: int) -> GenerationRequest:
            message = ChatMessage(role="user", content=prompt)
            return GenerationRequest(
                messages=[message], max_tokens=max_tokens, n=2, adapter=version
            )

        prompts = make_prompts(pairs)
        await asyncio.gather(*(engine.generate(request(p, 4)) for p in prompts[:4]))  # warm-up
        started = time.perf_counter()
        answers = await asyncio.gather(*(engine.generate(request(p, tokens)) for p in prompts))
        elapsed = time.perf_counter() - started
    finally:
        await engine.stop()
    return sum(o.completion_tokens for a in answers for o in a), elapsed


async def load_adapter(engine: TransformersEngine, model_dir: Path) -> str:
    """Write and load the serving benchmark's adapter (rank 8 on all linear layers)."""
    adapter = write_bench_adapter(Path(tempfile.mkdtemp()), model_dir)
    await engine.load_adapter(adapter.version, Path(adapter.uri))
    return adapter.version


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--pairs", type=int, default=64, help="concurrent pair requests")
    add_bench_max_tokens(parser)
    parser.add_argument("--top", type=int, default=15, help="functions to list")
    parser.add_argument("--sort", default="tottime", help="cProfile sort key (tottime, cumulative)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--adapter", action="store_true", help="answer with a LoRA adapter")
    parser.add_argument("--no-fold", action="store_true", help="keep PEFT's LoRA path")
    args = parser.parse_args()
    decode_loop.DecodeLoop._run = profiled_run(decode_loop.DecodeLoop._run)  # type: ignore[method-assign]
    tokens, seconds = asyncio.run(burst(args))
    [metric] = decode_loop.STEP_SECONDS.collect()
    steps = {sample.name: sample.value for sample in metric.samples}
    print(f"{tokens} tokens in {seconds:.1f} s: {tokens / seconds:.0f} tokens/s")
    count, total = (
        steps["rlhf_serving_engine_step_seconds_count"],
        steps["rlhf_serving_engine_step_seconds_sum"],
    )
    print(f"{count:.0f} engine steps, {total:.1f} s in steps")
    pstats.Stats(PROFILE).sort_stats(args.sort).print_stats(args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
