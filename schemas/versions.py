"""Adapter versions: ``"<name>@v<N>"``, e.g. ``policy@v17``, and where each lives in the store.

The one place that parses, formats, orders and locates versions; serving, the learner and the
loop all use it. ``base`` (the model without an adapter) is not a version of any family.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BASE = "base"  # serving's name for the base model without an adapter
VERSION_PATTERN = r"^[A-Za-z0-9_.-]+@v[0-9]+$"
_VERSION = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)@v(?P<number>[0-9]+)$")


@dataclass(frozen=True, order=True)
class AdapterVersion:
    """Ordered by family, then number (``policy@v9 < policy@v10``)."""

    name: str
    number: int

    @staticmethod
    def parse(text: str) -> AdapterVersion:
        """ValueError for anything that is not ``"<name>@v<N>"``."""
        match = _VERSION.match(text)
        if not match:
            raise ValueError(f"{text!r} is not '<name>@v<N>'")
        return AdapterVersion(match.group("name"), int(match.group("number")))

    @staticmethod
    def is_version(text: str) -> bool:
        return _VERSION.match(text) is not None

    def __str__(self) -> str:
        return f"{self.name}@v{self.number}"

    def next(self) -> AdapterVersion:
        return AdapterVersion(self.name, self.number + 1)

    def store_dir(self, store: str) -> str:
        """``{store}/{name}/v{N}``: the version's directory in an adapter store (path or URL)."""
        return f"{store.rstrip('/')}/{self.name}/v{self.number}"
