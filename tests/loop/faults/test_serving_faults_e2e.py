"""Broken adapters, adapter names that leave the store, and abusive requests against one real
serving process (``loop.faults.serving_faults``): every one refused (or served as plain text),
serving stays on the version it had and answers the next request."""

from __future__ import annotations

from pathlib import Path

import pytest

from loop.faults.serving_faults import run_serving_faults

pytestmark = pytest.mark.e2e


def test_broken_adapters_and_abusive_input_are_refused(tmp_path: Path) -> None:
    rows = run_serving_faults(tmp_path)
    assert len([r for r in rows if r.group == "adapter"]) == 11
    assert len([r for r in rows if r.group == "input"]) == 16
    failed = [(r.name, r.outcome) for r in rows if not r.passed]
    assert not failed, failed
