"""Moved to :mod:`loop.faults.adapters` (the fault suite's benchmark uses it too)."""

from loop.faults.adapters import BuiltAdapter, write_lora_files, write_promoted, write_version

__all__ = ["BuiltAdapter", "write_lora_files", "write_promoted", "write_version"]
