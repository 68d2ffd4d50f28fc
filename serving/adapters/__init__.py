"""Adapter hot-swap: ``AdapterManager`` (``serving.adapters.manager``: the alias state machine of
``serving.adapters.aliases`` following the adapters topic) and its errors."""

from serving.adapters.errors import (
    AdapterError,
    AdapterNotFound,
    AdapterRefused,
    AdapterStateError,
)
from serving.adapters.manager import AdapterManager
from serving.api_models import AdapterInfo

__all__ = [
    "AdapterError",
    "AdapterInfo",
    "AdapterManager",
    "AdapterNotFound",
    "AdapterRefused",
    "AdapterStateError",
]
