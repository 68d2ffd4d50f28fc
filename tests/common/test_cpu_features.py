"""common.cpu_features: native bf16 is read from the kernel's CPU flags."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from common import cpu_features

pytestmark = pytest.mark.unit

CPUINFO = """processor\t: 0
model name\t: Some CPU
flags\t\t: fpu sse2 avx2 {extra}

processor\t: 1
flags\t\t: fpu sse2 avx2 {extra}
"""


@pytest.fixture(autouse=True)
def _uncached() -> Iterator[None]:
    cpu_features.cpu_has_native_bf16.cache_clear()
    yield
    cpu_features.cpu_has_native_bf16.cache_clear()


@pytest.mark.parametrize(
    ("extra", "native"),
    [
        ("", False),
        ("avx512f avx512_vnni", False),
        ("avx512_bf16", True),
        ("amx_tile amx_bf16", True),
    ],
)
def test_native_bf16_is_avx512_bf16_or_amx_bf16(
    extra: str, native: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO.format(extra=extra))
    monkeypatch.setattr(cpu_features, "CPUINFO", cpuinfo)
    assert cpu_features.cpu_has_native_bf16() is native


def test_unreadable_cpuinfo_counts_as_without(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cpu_features, "CPUINFO", tmp_path / "absent")
    assert cpu_features.cpu_has_native_bf16() is False


def test_flags_of_text_without_a_flags_line_are_empty() -> None:
    assert cpu_features.cpu_flags("processor\t: 0\n") == frozenset()
