"""learner.precision: what each ``base_dtype`` setting loads the base in, on CPU and CUDA
(the hardware checks monkeypatched, so every case runs on any machine)."""

from __future__ import annotations

import pytest
import torch

from learner import precision
from learner.evaluate import EvalConfig
from learner.modeling import TrainOptions
from learner.precision import base_dtype_of, resolve_base_dtype

pytestmark = pytest.mark.unit


@pytest.fixture
def cpu_native(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A CPU with AVX-512 BF16 / AMX, and a GPU without bf16 (neither is asked here)."""
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    return monkeypatch


@pytest.fixture
def cpu_emulated(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    return monkeypatch


def test_auto_is_bfloat16_on_a_cpu_with_native_bf16(cpu_native: pytest.MonkeyPatch) -> None:
    assert precision.CPU_BF16_DEFAULT  # measured faster (docs/measurements.md)
    assert resolve_base_dtype("auto", on_cpu=True) == torch.bfloat16


def test_auto_is_float32_on_a_cpu_without(cpu_emulated: pytest.MonkeyPatch) -> None:
    assert resolve_base_dtype("auto", on_cpu=True) == torch.float32


def test_auto_on_a_native_cpu_follows_the_measured_default(
    cpu_native: pytest.MonkeyPatch,
) -> None:
    cpu_native.setattr(precision, "CPU_BF16_DEFAULT", False)
    assert resolve_base_dtype("auto", on_cpu=True) == torch.float32


def test_auto_on_cuda_follows_is_bf16_supported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_base_dtype("auto", on_cpu=False) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_base_dtype("auto", on_cpu=False) == torch.float32


def test_explicit_dtypes_are_taken_as_given(cpu_emulated: pytest.MonkeyPatch) -> None:
    assert resolve_base_dtype("float32", on_cpu=True) == torch.float32
    assert resolve_base_dtype("bfloat16", on_cpu=True) == torch.bfloat16  # slow, but asked


def test_bfloat16_without_native_support_warns(
    cpu_emulated: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    resolve_base_dtype("bfloat16", on_cpu=True)
    assert "without native bf16" in caplog.text


def test_a_config_resolves_on_its_device(cpu_native: pytest.MonkeyPatch) -> None:
    assert base_dtype_of(TrainOptions(device="cpu")) == torch.bfloat16
    assert base_dtype_of(EvalConfig(device="cpu", base_dtype="float32")) == torch.float32


@pytest.mark.parametrize("config", [TrainOptions, EvalConfig])
def test_an_unknown_dtype_is_refused_when_the_config_is_made(config: type) -> None:
    with pytest.raises(ValueError, match="base_dtype must be one of auto, float32, bfloat16"):
        config(base_dtype="float16")
