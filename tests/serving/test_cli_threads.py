"""``serve`` sets torch's thread count (SERVING_TORCH_THREADS, or the CPUs the process may use)
before the transformers engine loads, and leaves vLLM and the fake engine alone."""

from __future__ import annotations

from typing import Any

import pytest
import uvicorn

import common.cpu_budget
import serving.app
from serving.cli import configure_threads, main
from serving.settings import ServingSettings

pytestmark = pytest.mark.unit


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """What ``serve`` did, in order: threads configured, app created, server run (all faked)."""
    seen: list[tuple[str, Any]] = []

    def configure(setting: int, processes: int = 1) -> int:
        seen.append(("threads", setting))
        return setting or 2

    class Server:
        def __init__(self, config: Any) -> None:
            pass

        def run(self) -> None:
            seen.append(("run", None))

    monkeypatch.setattr(common.cpu_budget, "configure_torch_threads", configure)
    monkeypatch.setattr(serving.app, "create_app", lambda settings: seen.append(("app", None)))
    monkeypatch.setattr(uvicorn, "Server", Server)
    return seen


def test_serve_sets_threads_before_the_engine_loads(
    calls: list[tuple[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVING_TORCH_THREADS", "3")
    assert main(["--no-kafka"]) == 0
    assert calls == [("threads", 3), ("app", None), ("run", None)]


def test_automatic_by_default(calls: list[tuple[str, Any]]) -> None:
    assert configure_threads(ServingSettings(kafka_enabled=False)) == 2
    assert calls == [("threads", 0)]


# ids not named like a test tier (conftest times a test whose keywords name "vllm" as that tier)
@pytest.mark.parametrize("engine", ["vllm", "fake"], ids=["engine-vllm", "engine-fake"])
def test_other_engines_are_left_alone(calls: list[tuple[str, Any]], engine: str) -> None:
    assert configure_threads(ServingSettings(engine=engine, kafka_enabled=False)) is None
    assert calls == []


def test_negative_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="torch_threads"):
        ServingSettings(torch_threads=-1)
