"""Moved to :mod:`loop.faults.store_query` (the fault suite's benchmark uses it too)."""

from loop.faults.store_query import query_store

__all__ = ["query_store"]
