"""Fixtures for the HTTP-layer tests (the helpers they use are in tests/support/serving.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.support.serving import harness


@pytest.fixture
def make_harness() -> Callable[..., Any]:
    return harness
