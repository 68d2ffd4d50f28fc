"""The prefix cache's choice of what to keep, on plain token lists."""

from __future__ import annotations

from collections.abc import Callable

import torch

from serving.engines.prefix_cache import KV, MIN_TOKENS, PrefixCache, common_prefix

SYSTEM = list(range(100, 100 + MIN_TOKENS + 4))  # a shared start long enough to keep


def keys_values(prompt: list[int]) -> Callable[[int], KV]:
    """Fake keys/values: the token ids themselves, so a slice shows which tokens it holds."""
    ids = torch.tensor(prompt, dtype=torch.float32)[None, None, :, None]  # (1, 1, T, 1)
    return lambda n: [(ids[:, :, :n], ids[:, :, :n] + 0.5)]


def test_the_common_start_of_two_prompts_is_kept_and_served() -> None:
    cache = PrefixCache()
    first, second = [*SYSTEM, 1, 2, 3], [*SYSTEM, 4, 5]
    cache.offer("base", first, keys_values(first))
    assert cache.lookup("base", second) is None  # one prompt says nothing about sharing
    cache.offer("base", second, keys_values(second))
    hit = cache.lookup("base", [*SYSTEM, 9])
    assert hit is not None and hit.tokens == tuple(SYSTEM)
    assert hit.kv[0][0].flatten().tolist() == [float(t) for t in SYSTEM]
    assert cache.lookup("base", SYSTEM) is None  # at least one token must be left to prefill
    assert cache.lookup("other@v1", [*SYSTEM, 9]) is None  # keys and values are per adapter
    assert cache.lookup("base", [7, *SYSTEM]) is None


def test_short_common_starts_are_not_kept_and_forget_drops_the_entry() -> None:
    cache = PrefixCache()
    short = SYSTEM[: MIN_TOKENS - 1]
    for tail in ([1], [2], [3]):
        cache.offer("base", short + tail, keys_values(short + tail))
    assert cache.lookup("base", [*short, 4]) is None
    for tail in ([1], [2]):
        cache.offer("a@v1", SYSTEM + tail, keys_values(SYSTEM + tail))
    assert cache.lookup("a@v1", [*SYSTEM, 3]) is not None
    cache.forget("a@v1")
    assert cache.lookup("a@v1", [*SYSTEM, 3]) is None


def test_a_new_shared_start_replaces_one_that_no_longer_matches() -> None:
    cache = PrefixCache()
    other = list(range(500, 500 + MIN_TOKENS + 2))
    for prompt in ([*SYSTEM, 1], [*SYSTEM, 2], [*other, 1], [*other, 2]):
        cache.offer("base", prompt, keys_values(prompt))
    assert cache.lookup("base", [*other, 3]) is not None
    assert cache.lookup("base", [*SYSTEM, 3]) is None
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2 and common_prefix([1], [1, 2]) == 1
