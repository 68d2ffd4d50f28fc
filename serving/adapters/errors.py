"""Adapter manager errors. The HTTP layer maps them by their standard bases:
``AdapterRejected`` -> 422, ``LookupError`` -> 404, ``ValueError`` -> 400."""

from __future__ import annotations

from serving.engines.protocol import AdapterRejected


class AdapterError(Exception):
    """Base of the manager's errors; ``reason`` is a short countable label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class AdapterRefused(AdapterError, AdapterRejected):
    """A version failed its checks (files, manifest, base model, engine load, smoke check)."""


class AdapterNotFound(AdapterError, LookupError):
    """The version is neither loaded nor present in the adapter store."""


class AdapterStateError(AdapterError, ValueError):
    """The request does not fit the current state (nothing to roll back to, wrong family)."""
