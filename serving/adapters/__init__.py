"""Adapter hot-swap: ``AdapterManager`` (see ``serving.adapters.manager``) and its errors."""

from serving.adapters.errors import (
    AdapterError,
    AdapterNotFound,
    AdapterRefused,
    AdapterStateError,
)
from serving.adapters.manager import AdapterInfo, AdapterManager

__all__ = [
    "AdapterError",
    "AdapterInfo",
    "AdapterManager",
    "AdapterNotFound",
    "AdapterRefused",
    "AdapterStateError",
]
