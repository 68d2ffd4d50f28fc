"""A whole service in real processes for fault scenarios: a Tansu broker (on disk, optionally
behind a :class:`~loop.faults.tcp_proxy.TcpProxy`), ``serve`` replicas and ``learner run``
started by their command lines on the tiny random model, and simulated users calling the public
HTTP API, every answer and accepted vote written down in a :class:`~loop.faults.ledger.Ledger`.

The learner runs either the real trainers (tiny PPO: slow, proves a real adapter is swapped in)
or the fake ones (``LEARNER_TRAINERS=fake``: milliseconds, the service is under test, not the
ML). Fake adapters cannot load onto a real model, so a fake-trainer learner publishes under its
own model name, which serving ignores.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from devtools.broker import DevBroker, free_port
from devtools.tiny_model import write_tiny_model_dir
from loop.faults.ledger import Ledger, RecordingSimulator
from loop.faults.store_query import query_store
from loop.faults.tcp_proxy import ProxiedBroker
from loop.monitor import admin_adapters, scrape
from loop.preferences import NoiseConfig
from loop.processes import ManagedProcess, entry_point
from loop.sim import SimConfig

logger = logging.getLogger(__name__)

# The learner's model name when it runs fake trainers: serving (model name "tiny") ignores
# adapter events of another model, so the fake adapters are never offered to it.
FAKE_LEARNER_MODEL_NAME = "fault-suite-fake-learner"
SERVING_MODEL_NAME = "tiny"


@dataclass
class Replica:
    name: str
    root: str
    spool: Path
    process: ManagedProcess | None = None
    starts: int = 0

    @property
    def port(self) -> str:
        return self.root.rsplit(":", 1)[1]


@dataclass
class Users:
    sim: RecordingSimulator
    thread: threading.Thread


def tiny_learner_env(
    model_dir: Path,
    bootstrap: str,
    data_dir: Path,
    adapter_store: Path,
    min_new_comparisons: int,
) -> dict[str, str]:
    """The demo's tiny learner settings (loop/demo.py), smaller still, and gates that always
    pass: fault scenarios are about faults, not about what a random model learns."""
    return {
        "LEARNER_MODEL_DIR": str(model_dir),
        "LEARNER_KAFKA_BOOTSTRAP": bootstrap,
        "LEARNER_DATA_DIR": str(data_dir),
        "LEARNER_ADAPTER_STORE": str(adapter_store),
        "LEARNER_MIN_NEW_COMPARISONS": str(min_new_comparisons),
        "LEARNER_METRICS_PORT": "0",
        "LEARNER_POLL_TIMEOUT_MS": "200",
        "LEARNER_IDLE_SLEEP_SECONDS": "0.2",
        "LEARNER_RM_MIN_ACCURACY": "0.0",
        "LEARNER_RM_GATE_CONFIDENCE": "0",
        "LEARNER_MIN_REWARD_GAIN": "-1000000000",
        "LEARNER_KL_BUDGET": "1000000",
        "LEARNER_SANITY_PROMPTS": "[]",
        "LEARNER_SFT_ON_CORRECTIONS": "false",
        "LEARNER_PPO_NUM_PROMPTS": "8",
        "LEARNER_EVAL_NUM_PROMPTS": "4",
        "LEARNER_EVAL_CONFIG": json.dumps(
            {"max_repeat_fraction": 1.0, "max_new_tokens": 8, "batch_size": 4}
        ),
        "LEARNER_REWARD_CONFIG": json.dumps({"learning_rate": 5e-3, "num_epochs": 1}),
        "LEARNER_PPO_CONFIG": json.dumps(
            {
                "learning_rate": 5e-3,
                "num_steps": 12,
                "batch_size": 4,
                "mini_batch_size": 2,
                "ppo_epochs": 1,
                "max_new_tokens": 8,
            }
        ),
    }


@dataclass
class WorldOptions:
    proxied: bool = False  # the broker only behind a cuttable TCP proxy
    fake_trainers: bool = False
    # Notice an outage quickly and probe for the broker's return often.
    delivery_timeout_seconds: float = 2.0
    extra_serving_env: dict[str, str] = field(default_factory=dict)


class World:
    """Broker, serving replicas, learner and users of one scenario, and what it reads back."""

    def __init__(self, tmp: Path, options: WorldOptions | None = None) -> None:
        self.tmp = tmp
        self.options = options or WorldOptions()
        self.model_dir = write_tiny_model_dir(tmp / "tiny-model")
        self.adapters = tmp / "adapters"
        # Fake adapters live in a store of their own, apart from the real ones serving loads.
        self.learner_adapters = tmp / "learner-adapters" if self.options.fake_trainers else None
        self.learner_data = tmp / "learner"
        self.api_key = "sim-" + secrets.token_hex(8)
        self.admin_token = secrets.token_hex(16)
        self.hmac_key = secrets.token_hex(16)
        self.broker: DevBroker
        if self.options.proxied:
            self.broker = ProxiedBroker(log_path=tmp / "broker.log", data_dir=tmp / "broker-data")
        else:
            self.broker = DevBroker(
                port=free_port(), data_dir=tmp / "broker-data", log_path=tmp / "broker.log"
            )
        self.replicas: list[Replica] = []
        self.learner: ManagedProcess | None = None
        self.learner_starts = 0
        self.learner_env_extra: dict[str, str] = {}
        self.ledger = Ledger()
        self.users: list[Users] = []
        self.user_stats: list[dict[str, Any]] = []

    # -- convenience for the single-replica case -------------------------------------------------
    @property
    def serving(self) -> ManagedProcess | None:
        return self.replicas[0].process if self.replicas else None

    @property
    def root(self) -> str:
        return self.replicas[0].root

    @property
    def proxy(self) -> Any:
        assert isinstance(self.broker, ProxiedBroker), "this world has no proxy"
        return self.broker.proxy

    # -- processes -----------------------------------------------------------------------------
    def add_replica(self) -> Replica:
        name = f"serving-{len(self.replicas)}"
        replica = Replica(name, f"http://127.0.0.1:{free_port()}", self.tmp / f"{name}-spool")
        self.replicas.append(replica)
        return replica

    def start_serving(self, replica: Replica | None = None) -> Replica:
        replica = replica or (self.replicas[0] if self.replicas else self.add_replica())
        env = {
            "SERVING_MODEL_DIR": str(self.model_dir),
            "SERVING_MODEL_NAME": SERVING_MODEL_NAME,
            "SERVING_PORT": replica.port,
            "SERVING_KAFKA_BOOTSTRAP": self.broker.bootstrap,
            "SERVING_SPOOL_DIR": str(replica.spool),
            "SERVING_ADAPTER_STORE": str(self.adapters),
            "SERVING_ADAPTER_CACHE_DIR": str(self.tmp / f"{replica.name}-adapter-cache"),
            "SERVING_API_KEYS": json.dumps([self.api_key]),
            "SERVING_ADMIN_TOKEN": self.admin_token,
            "SERVING_HMAC_KEY": self.hmac_key,
            "SERVING_KAFKA_DELIVERY_TIMEOUT_SECONDS": str(self.options.delivery_timeout_seconds),
            "SERVING_SPOOL_RETRY_MAX_SECONDS": "1",
            # A replica that starts during an outage turns ready (degraded) soon.
            "SERVING_ADAPTER_START_TIMEOUT_SECONDS": "5",
            **self.options.extra_serving_env,
        }
        replica.starts += 1
        replica.process = ManagedProcess(
            replica.name,
            entry_point("serve", "serving.cli"),
            env,
            self.tmp / f"{replica.name}-{replica.starts}.log",
        ).start()
        return replica

    def learner_env(self, min_new_comparisons: int) -> dict[str, str]:
        # The demo's tiny settings (loop/demo.py), smaller still, and gates that always pass:
        # the scenarios are about faults, not about what a random model learns.
        env = tiny_learner_env(
            self.model_dir,
            self.broker.bootstrap,
            self.learner_data,
            self.learner_adapters or self.adapters,
            min_new_comparisons,
        )
        env["LEARNER_MODEL_NAME"] = SERVING_MODEL_NAME
        if self.options.fake_trainers:
            env |= {
                "LEARNER_TRAINERS": "fake",
                "LEARNER_MODEL_NAME": FAKE_LEARNER_MODEL_NAME,
                "LEARNER_SFT_ON_CORRECTIONS": "true",
                "LEARNER_CYCLE_PERIOD_SECONDS": "1",
                "LEARNER_REWARD_CONFIG": json.dumps({"fake_seconds": 0.2}),
                "LEARNER_PPO_CONFIG": json.dumps({"fake_seconds": 0.2}),
            }
        return env | self.learner_env_extra

    def start_learner(self, min_new_comparisons: int, **extra_env: str) -> ManagedProcess:
        self.learner_starts += 1
        self.learner = ManagedProcess(
            "learner",
            [*entry_point("learner", "learner.cli"), "run"],
            self.learner_env(min_new_comparisons) | extra_env,
            self.tmp / f"learner-{self.learner_starts}.log",
        ).start()
        return self.learner

    def start_users(
        self, replica: Replica | None = None, seed: int = 11, clients: int = 2, retries: int = 3
    ) -> Users:
        """``clients`` concurrent users; two are paced (2 comparisons/s), more are not (load).
        ``retries``: the client's automatic retries of a failed chat (0: every failure counts)."""
        config = SimConfig(
            base_url=(replica or self.replicas[0]).root,
            api_key=self.api_key,
            comparisons=0,  # until stopped
            concurrency=clients,
            rate=2.0 if clients <= 2 else 0.0,
            noise=NoiseConfig(0.5),
            max_tokens=16,
            thumbs_rate=0.3,
            correction_rate=0.2,
            seed=seed + len(self.users) + len(self.user_stats),
            client_retries=retries,
        )
        sim = RecordingSimulator(config, self.ledger)
        thread = threading.Thread(
            target=lambda: asyncio.run(sim.run()), name="sim-users", daemon=True
        )
        thread.start()
        users = Users(sim, thread)
        self.users.append(users)
        return users

    def stop_users(self, replica: Replica | None = None) -> dict[str, Any]:
        """Stop the user groups (of ``replica`` only, if given: it is about to leave, as a load
        balancer drains it); merged statistics of all groups (finished ones in ``user_stats``)."""
        leaving = [
            u for u in self.users if replica is None or u.sim.config.base_url == replica.root
        ]
        for users in leaving:
            users.sim.request_stop()
        for users in leaving:
            users.thread.join(120)
            if users.thread.is_alive():
                raise AssertionError("simulated users did not finish")
            self.user_stats.append(users.sim.stats.snapshot())
        self.users = [u for u in self.users if u not in leaving]
        return self.all_user_stats()

    def all_user_stats(self, since: int = 0) -> dict[str, Any]:
        """Merged statistics of the user groups from the ``since``-th finished one on."""
        snaps = self.user_stats[since:] + [u.sim.stats.snapshot() for u in self.users]
        errors: dict[str, int] = {}
        failed: dict[str, int] = {}
        for snap in snaps:
            for key, value in snap["errors"].items():
                errors[key] = errors.get(key, 0) + value
            for key, value in snap["feedback_failed"].items():
                failed[key] = failed.get(key, 0) + value
        pairs = sum(int(s["pairs"]) for s in snaps)
        return {"pairs": pairs, "errors": errors, "feedback_failed": failed}

    def close(self) -> None:
        for users in self.users:
            users.sim.request_stop()
        procs = [r.process for r in self.replicas] + [self.learner]
        for proc in procs:
            if proc is not None and proc.running:
                proc.stop(timeout=30)
        self.broker.stop()

    # -- observations --------------------------------------------------------------------------
    def diagnostics(self) -> str:
        parts = [f"users: {self.all_user_stats()}"]
        for proc in [r.process for r in self.replicas] + [self.learner]:
            if proc is not None:
                parts.append(f"--- {proc.name} ({proc.returncode}):\n{proc.log_tail(25)}")
        return "\n".join(parts)

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in [r.process for r in self.replicas] + [self.learner]:
                if proc is not None and proc.proc is not None and proc.returncode is not None:
                    if proc.returncode in (-signal.SIGKILL, 0, -signal.SIGTERM):
                        continue  # killed or stopped on purpose
                    raise AssertionError(f"{proc.name} exited while waiting for {what}")
            value = check()
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(
            f"timed out after {timeout:.0f}s waiting for {what}\n" + self.diagnostics()
        )

    def serving_metrics(self, replica: Replica | None = None) -> dict[str, float]:
        return scrape(f"{(replica or self.replicas[0]).root}/metrics")

    def ready(self, replica: Replica | None = None) -> bool:
        try:
            root = (replica or self.replicas[0]).root
            return httpx.get(f"{root}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def serving_version(self, replica: Replica | None = None) -> str | None:
        state = admin_adapters((replica or self.replicas[0]).root, self.admin_token) or {}
        version = state.get("serving_version")
        return str(version) if version is not None else None

    def admin_post(self, replica: Replica, path: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(
            f"{replica.root}{path}",
            json=body,
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=120,
        )

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        return query_store(self.learner_data / "store.sqlite", sql)

    def store_events(self) -> int:
        rows = self.query("SELECT COUNT(*) FROM events")
        return int(rows[0][0]) if rows else 0

    def stored_event_ids(self) -> list[str]:
        return [str(r[0]) for r in self.query("SELECT event_id FROM events")]

    def checkpoint(self) -> dict[str, Any] | None:
        path = self.learner_data / "checkpoint.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None  # absent, or read between write and rename of a new one
        return data if isinstance(data, dict) else None

    def adapter_entries(self) -> list[str]:
        family = self.adapters / "policy"
        return sorted(p.name for p in family.iterdir()) if family.is_dir() else []
