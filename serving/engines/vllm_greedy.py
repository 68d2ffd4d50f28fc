"""A greedy answer from vLLM checked against a draft in one prefill: the vLLM engine's smoke check.

Inside a busy vLLM batch each token of a smoke answer waits one step of the whole batch (about
a second at 128 rows on 2 CPU cores, so 16 tokens took 13 s under load). With a draft of the
answer (the base model's greedy answer), the prompt and the draft go in as one prompt with
``prompt_logprobs=1``: vLLM reports the model's top token at every draft position, and the
longest prefix of the draft that agrees with them is the start of the model's own greedy answer
(greedy speculative decoding, as ``serving.engines.solo_greedy`` does for the transformers
engine). Only a rest after the first disagreement is decoded the ordinary way.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from typing import Any

from serving.engines.protocol import EngineFailure


async def greedy_tokens(
    llm: Any,
    lora: Any,
    prompt: list[int],
    max_new: int,
    eos_ids: set[int],
    draft: Sequence[int] = (),
) -> list[int]:
    """Up to ``max_new`` greedy tokens after ``prompt`` (EOS not included); EngineFailure on
    non-finite logits."""
    guess = list(draft)[: max(0, max_new - 1)]
    tokens: list[int] = []
    if guess:
        out = await _final(llm, lora, prompt + guess, max_tokens=1, prompt_logprobs=1)
        for i, guessed in enumerate(guess):
            token = _top_token(out.prompt_logprobs[len(prompt) + i])
            if token in eos_ids:
                return tokens
            tokens.append(token)
            if token != guessed:
                break
        else:  # the whole draft agreed: the token vLLM sampled after it comes next
            picked = _sampled(out.outputs[0])[:1]
            if not picked or picked[0] in eos_ids:
                return tokens
            tokens += picked
    if len(tokens) < max_new:
        out = await _final(llm, lora, prompt + tokens, max_tokens=max_new - len(tokens))
        for token in _sampled(out.outputs[0]):
            if token in eos_ids:
                break
            tokens.append(token)
    return tokens


async def _final(llm: Any, lora: Any, ids: list[int], **params: Any) -> Any:
    """vLLM's final output for one greedy request on ``ids``."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    request_id = uuid.uuid4().hex
    sampling = SamplingParams(
        temperature=0.0, logprobs=0, output_kind=RequestOutputKind.FINAL_ONLY, **params
    )
    out = None
    try:
        async for update in llm.generate(
            {"prompt_token_ids": ids}, sampling, request_id, lora_request=lora
        ):
            out = update  # FINAL_ONLY: one update, when the answer is done
    finally:
        if out is None or not out.finished:
            await llm.abort(request_id)
    if out is None or not out.outputs:
        raise EngineFailure("vLLM returned no answer")
    return out


def _top_token(entry: dict[int, Any] | None) -> int:
    """The rank-1 token of one position's prompt logprobs."""
    for token, logprob in (entry or {}).items():
        if not math.isfinite(logprob.logprob):
            raise EngineFailure("non-finite logits")
        if logprob.rank == 1:
            return int(token)
    raise EngineFailure("vLLM reported no top token for a prompt position")


def _sampled(completion: Any) -> list[int]:
    """The tokens of one answer; EngineFailure if any was sampled from non-finite logits."""
    tokens = [int(t) for t in completion.token_ids]
    for token, entry in zip(tokens, completion.logprobs or [], strict=False):
        item = entry.get(token)
        if item is None or not math.isfinite(item.logprob):
            raise EngineFailure("non-finite logits")
    return tokens
