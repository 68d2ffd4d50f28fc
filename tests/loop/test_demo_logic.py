"""When the demo stops, and how it configures the services (no processes started)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from loop.dashboard import Observation
from loop.demo import Demo, DemoConfig


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
