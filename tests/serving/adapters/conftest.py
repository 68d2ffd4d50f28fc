"""Async tests run on asyncio through anyio's pytest plugin (installed with anyio)."""

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
