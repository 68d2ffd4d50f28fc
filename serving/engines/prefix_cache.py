"""The keys and values of a prompt prefix that many requests share, kept to skip its prefill.

Chat requests repeat their start: the chat template's system prompt and turn markers (about 30
of the 40 tokens of a short SmolLM2 prompt), an application's own instructions. Prefill costs
the same FLOPs per token as decoding, so on a compute-bound CPU every repeated prefix token is
lost throughput. vLLM caches every full block of every prompt (automatic prefix caching, Kwon et
al., SOSP 2023); this keeps one prefix per adapter (keys and values depend on the adapter): the
longest common start of two consecutive prompts of that adapter, once it is at least
``MIN_TOKENS`` long. A request whose prompt extends the cached prefix prefills only the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

MIN_TOKENS = 16  # shorter common starts are not worth an entry

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (1, H, L, D)


@dataclass(frozen=True, eq=False)  # identity: the engine groups requests by entry
class Prefix:
    tokens: tuple[int, ...]
    kv: KV

    def __len__(self) -> int:
        return len(self.tokens)


class PrefixCache:
    def __init__(self) -> None:
        self._entries: dict[str, Prefix] = {}
        self._last: dict[str, list[int]] = {}  # the previous prompt of each adapter

    def lookup(self, adapter: str, prompt: list[int]) -> Prefix | None:
        """The cached prefix ``prompt`` extends by at least one token, if any."""
        entry = self._entries.get(adapter)
        if entry is None or len(prompt) <= len(entry):
            return None
        return entry if tuple(prompt[: len(entry)]) == entry.tokens else None

    def offer(self, adapter: str, prompt: list[int], keys_values: Callable[[int], KV]) -> None:
        """Learn from a prompt just prefilled in full; ``keys_values(n)`` gives its first n
        tokens' keys and values. Keeps the common start of this prompt and the previous one."""
        previous, self._last[adapter] = self._last.get(adapter), list(prompt)
        if previous is None:
            return
        shared = min(common_prefix(previous, prompt), len(prompt) - 1)
        if shared < MIN_TOKENS:
            return
        entry = self._entries.get(adapter)
        if entry is not None and len(entry) >= shared and self.lookup(adapter, prompt):
            return  # the cached prefix already covers this start
        kv = [(k.detach().clone(), v.detach().clone()) for k, v in keys_values(shared)]
        self._entries[adapter] = Prefix(tuple(prompt[:shared]), kv)

    def forget(self, adapter: str) -> None:
        self._entries.pop(adapter, None)
        self._last.pop(adapter, None)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
