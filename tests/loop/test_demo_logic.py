"""When the demo stops, and how it configures the services (no processes started)."""

from __future__ import annotations

import argparse
import json
import threading
from pathlib import Path

import pytest

from loop.dashboard import Observation
from loop.demo import Demo, DemoConfig, benchmark_config, split_threads
from loop.demo_cli import build_parser


def _obs(elapsed: float = 1.0, versions: tuple[str, ...] = ("base",)) -> Observation:
    sim = {"answers_by_version": {v: {"answers": 1} for v in versions}}
    return Observation("concise", elapsed, sim, {}, {}, None, [], "running", "")


def test_until_swapped_waits_for_a_new_version_and_its_eval(tmp_path: Path) -> None:
    demo = Demo(DemoConfig(until_swapped=1, data_dir=tmp_path))
    assert demo.done(_obs(versions=("base",))) is None
    release = threading.Event()
    demo._eval_thread = threading.Thread(target=release.wait)
    demo._eval_thread.start()
    try:
        assert demo.done(_obs(versions=("base", "policy@v1"))) is None  # eval still running
    finally:
        release.set()
        demo._eval_thread.join()
    assert demo.done(_obs(versions=("base", "policy@v1"))) == "answers served by policy@v1"


def test_duration_stops_the_demo(tmp_path: Path) -> None:
    demo = Demo(DemoConfig(duration=10, data_dir=tmp_path))
    assert demo.done(_obs(elapsed=5)) is None
    assert demo.done(_obs(elapsed=10)) == "duration reached"


def test_services_get_secrets_ports_and_store_by_settings(tmp_path: Path) -> None:
    demo = Demo(
        DemoConfig(
            data_dir=tmp_path, tiny=True, cycle_comparisons=7, learner_env={"LEARNER_SEED": "3"}
        )
    )

    class _Broker:
        bootstrap = "127.0.0.1:1234"

    demo.broker = _Broker()  # type: ignore[assignment]
    serving = demo._serving_env("/m", "/store")
    learner = demo._learner_env("/m", "/store")
    assert json.loads(serving["SERVING_API_KEYS"]) == [demo.api_key]
    assert serving["SERVING_ADMIN_TOKEN"] == demo.admin_token
    assert len(serving["SERVING_HMAC_KEY"]) >= 16
    assert serving["SERVING_ADAPTER_STORE"] == learner["LEARNER_ADAPTER_STORE"] == "/store"
    assert serving["SERVING_KAFKA_BOOTSTRAP"] == learner["LEARNER_KAFKA_BOOTSTRAP"]
    assert learner["LEARNER_MIN_NEW_COMPARISONS"] == "7"
    assert learner["LEARNER_SEED"] == "3"
    assert learner["LEARNER_SANITY_PROMPTS"] == "[]"  # tiny mode opens the quality gates
    assert demo._learner_env("/m", "/s") == learner | {"LEARNER_ADAPTER_STORE": "/s"}


def _learner_env(demo: Demo) -> dict[str, str]:
    class _Broker:
        bootstrap = "127.0.0.1:1234"

    demo.broker = _Broker()  # type: ignore[assignment]
    return demo._learner_env("/m", "/store")


def test_the_canary_is_on_by_default_and_the_learner_setting_wins(tmp_path: Path) -> None:
    on = Demo(DemoConfig(data_dir=tmp_path))
    assert on.canary and _learner_env(on)["LEARNER_CANARY"] == "true"
    off = Demo(DemoConfig(data_dir=tmp_path, canary=False))
    assert not off.canary and _learner_env(off)["LEARNER_CANARY"] == "false"
    explicit = Demo(DemoConfig(data_dir=tmp_path, learner_env={"LEARNER_CANARY": "False"}))
    assert not explicit.canary and _learner_env(explicit)["LEARNER_CANARY"] == "False"
    assert on._learner_args() == ["run"]
    limited = Demo(DemoConfig(data_dir=tmp_path, learner_max_cycles=2))
    assert limited._learner_args() == ["run", "--max-cycles", "2"]


def test_rlhf_demo_turns_the_canary_off_on_request() -> None:
    assert build_parser().parse_args([]).canary is True
    assert build_parser().parse_args(["--no-canary"]).canary is False


def test_benchmarks_run_without_the_canary_unless_they_ask(tmp_path: Path) -> None:
    args = argparse.Namespace(data_dir=tmp_path, tiny=True, learner_env=[])
    assert benchmark_config(args, {}).canary is False
    assert benchmark_config(args, {}, canary=True).canary is True


def test_the_users_seed_is_the_configured_one_or_drawn_and_kept(tmp_path: Path) -> None:
    assert Demo(DemoConfig(data_dir=tmp_path, user_seed=7)).user_seed == 7
    drawn = Demo(DemoConfig(data_dir=tmp_path)).user_seed
    assert isinstance(drawn, int) and 0 <= drawn < 10_000


def test_serving_and_the_learner_split_the_cpus() -> None:
    assert split_threads(1) == (1, 1)  # one CPU: one thread each, never none
    assert split_threads(2) == (1, 1)
    assert split_threads(3) == (2, 1)
    assert split_threads(16) == (8, 8)


def test_the_demo_sets_each_services_share_unless_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SERVING_TORCH_THREADS", raising=False)
    monkeypatch.delenv("LEARNER_TORCH_THREADS", raising=False)
    monkeypatch.setattr("common.cpu_budget.available_cpus", lambda: 4)
    demo = Demo(DemoConfig(data_dir=tmp_path, learner_env={"LEARNER_TORCH_THREADS": "3"}))
    assert demo._split_threads("SERVING_TORCH_THREADS", {}, 0) == {"SERVING_TORCH_THREADS": "2"}
    assert demo._split_threads("LEARNER_TORCH_THREADS", demo.config.learner_env, 1) == {}
    monkeypatch.setenv("SERVING_TORCH_THREADS", "4")
    assert demo._split_threads("SERVING_TORCH_THREADS", {}, 0) == {}
    alone = Demo(DemoConfig(data_dir=tmp_path, split_cpus=False))
    monkeypatch.delenv("SERVING_TORCH_THREADS")
    assert alone._split_threads("SERVING_TORCH_THREADS", {}, 0) == {}
