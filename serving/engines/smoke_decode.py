"""One prompt decoded greedily on its own, outside the running batch: an adapter's smoke check.

Alone, one token costs a whole forward of the model at batch 1 (about 65 ms for SmolLM2-135M
in float32 on 2 cores: reading every weight once, docs/measurements.md), so 16 tokens held the
batch for over a second. A *draft* of the answer cuts that: the prompt and the draft go through
one forward, the model's own greedy pick is read at every draft position, and the longest prefix
of the draft it agrees with is kept, plus its pick at the first disagreement (greedy
speculative decoding: Leviathan et al. 2023, "Fast Inference from Transformers via Speculative
Decoding", https://arxiv.org/abs/2211.17192, with the draft taken as given instead of sampled
from a small model). The answer is the one plain decoding gives (up to float rounding in the
longer forward); only the number of sequential forwards changes. A new version of an adapter
trained against a KL penalty mostly agrees with the base model's answer, which is the draft
the engine passes, so its check usually takes one or two forwards.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache

from serving.engines.peft_adapters import AdapterSet
from serving.engines.protocol import EngineFailure


def smoke_decode(
    adapters: AdapterSet,
    prompt_ids: list[int],
    adapter: str,
    max_new: int,
    *,
    eos_ids: set[int],
    max_positions: int,
    device: torch.device,
    draft: Sequence[int] = (),
) -> list[int]:
    """Up to ``max_new`` greedy tokens of ``adapter`` after ``prompt_ids`` (EOS not included);
    EngineFailure on non-finite logits. Run it on the engine thread: it drives the model."""
    cache = DynamicCache()
    guess = list(draft)[: max(0, max_new - 1)]
    feed = list(prompt_ids) + guess
    tokens: list[int] = []
    while True:
        picks = _forward(adapters, cache, feed, adapter, len(guess) + 1, device)
        for logits, guessed in zip(picks, [*guess, None], strict=True):
            if not bool(torch.isfinite(logits).all()):
                raise EngineFailure(f"non-finite logits (adapter {adapter})")
            token = int(logits.argmax())
            if token in eos_ids or len(prompt_ids) + len(tokens) >= max_positions:
                return tokens
            tokens.append(token)
            if len(tokens) >= max_new:
                return tokens
            if token != guessed:
                break
        # Keep the keys and values of the prompt and the accepted tokens; the newest token
        # (the model's own pick) is fed next.
        _crop(cache, len(prompt_ids) + len(tokens) - 1)
        feed, guess = [tokens[-1]], []


def _forward(
    adapters: AdapterSet,
    cache: DynamicCache,
    feed: list[int],
    adapter: str,
    keep: int,
    device: torch.device,
) -> torch.Tensor:
    """The logits of the last ``keep`` positions of ``feed`` (keep, V), fed after ``cache``."""
    start = cache.get_seq_length()
    out = adapters.model(
        input_ids=torch.tensor([feed], dtype=torch.long, device=device),
        position_ids=torch.arange(start, start + len(feed), device=device)[None],
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=keep,
        # Folding the new version here would evict the served one's folded weights.
        **adapters.forward_kwargs([adapter], fold=False),
    )
    return out.logits[0]


def _crop(cache: DynamicCache, length: int) -> None:
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)  # a negative count removes that many of the newest positions
