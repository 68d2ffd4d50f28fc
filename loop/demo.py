"""The whole loop on one machine, live: broker, serving, learner and simulated users.

:class:`Demo` starts the development Kafka broker (``devtools.broker.DevBroker``), the ``serve``
and ``learner run`` processes (configured only through their ``SERVING_*`` / ``LEARNER_*``
settings) on the embedded SmolLM2 (or ``tiny``, a tiny random model for tests), and simulated
users voting under a preference function; :meth:`Demo.observe` gathers what the dashboard
(:mod:`loop.dashboard`) shows: pairs served, feedback by kind, events produced / spooled /
dropped, the learner's cycles and gates, adapter versions published and swapped in, the running
canary (each new version first serves a share of pairs beside the serving one until the users'
votes promote or roll it back; ``canary=False`` publishes straight to everyone), and how the
serving version does against the base. The command line (``rlhf-demo``) is
:mod:`loop.demo_cli`; the acceptance run and the loop benchmark drive a :class:`Demo` too
(:func:`benchmark_config`).

:meth:`Demo.shutdown` stops it in the order that loses no event: simulated users stop starting
comparisons and finish the ones in flight; serving gets SIGTERM and drains (its event logger
flushes last); the learner gets SIGTERM; then every event in the broker is counted and compared
with what the users were served and said; then the broker stops. The verdict and all numbers
are written to ``{data_dir}/summary.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loop.service_options import env_pairs
from loop.user_options import DEFAULT_MAX_TOKENS

# The rest is imported where it is used: ``rlhf-demo --help`` must answer at once, and the
# clients, metrics parser and dashboard (openai, httpx, prometheus_client, rich, pydantic
# schemas) take a noticeable part of a second to import, more on a busy machine.
if TYPE_CHECKING:
    from devtools.broker import DevBroker
    from loop.dashboard import Observation
    from loop.eval import EvalConfig
    from loop.monitor import AdapterWatcher
    from loop.processes import ManagedProcess
    from loop.sim import Simulator

logger = logging.getLogger(__name__)


# What one learner cycle took in observed runs (docs/loop.md, "Observed runs"): about 3 minutes
# on the tiny model, about 6 on SmolLM2 on 2 CPU cores with the users still voting and the CPUs
# split between the services (30 before the split, the bfloat16 base and engine rollouts). Only
# for the outlook shown before the learner finished its first cycle; then its own time is used.
TINY_CYCLE_SECONDS = 180.0
EMBEDDED_CPU_CYCLE_SECONDS = 360.0
# Shorter than the other commands' answers (DEFAULT_MAX_TOKENS): on CPU each pair takes time in
# proportion, and the demo is about seeing cycles and swaps come round.
DEMO_MAX_TOKENS = 64
assert DEMO_MAX_TOKENS < DEFAULT_MAX_TOKENS


@dataclass
class DemoConfig:
    preference: str = "loop.preferences:concise"
    comparisons: int = 0  # 0 = until stopped
    duration: float = 0.0  # 0 = until Ctrl-C (or --until-swapped)
    model_dir: str = "embedded"
    tiny: bool = False
    data_dir: Path | None = None
    concurrency: int = 4
    rate: float = 0.0
    noise: float = 1.0
    correction_rate: float = 0.05  # share of comparisons that also send a rewritten answer
    thumbs_rate: float = 0.1  # share that also rate one answer up/down
    max_tokens: int = DEMO_MAX_TOKENS
    cycle_comparisons: int = 64  # LEARNER_MIN_NEW_COMPARISONS
    until_swapped: int = 0  # stop once answers came from this many new versions
    eval_prompts: int = 8  # held-out prompts per automatic eval of a new version (0 = off)
    ready_timeout: float = 600.0
    learner_stop_timeout: float = 300.0  # SIGTERM lets it finish the step it is in
    refresh: float = 1.0
    # Each new version first serves as a canary; the users' votes promote or roll it back
    # (LEARNER_CANARY; docs/learning.md, "Canary: the users decide").
    canary: bool = True
    learner_max_cycles: int | None = None  # ``learner run --max-cycles``; None: no limit
    user_seed: int | None = None  # the simulated users' seed; None: drawn from the clock
    # Serving and the learner on one machine split its CPUs instead of each sizing its torch
    # threads to all of them (``split_threads``); benchmarks that time one alone turn it off.
    split_cpus: bool = True
    serving_env: dict[str, str] = field(default_factory=dict)
    learner_env: dict[str, str] = field(default_factory=dict)


class Demo:
    def __init__(self, config: DemoConfig) -> None:
        self.config = config
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        self.data_dir = (config.data_dir or Path("var/demo") / f"run-{stamp}").resolve()
        from devtools.broker import free_port

        self.api_key = "sim-" + secrets.token_hex(8)
        # Kept so that a report can name it and a run can be repeated.
        self.user_seed = int(time.time()) % 10_000 if config.user_seed is None else config.user_seed
        self.admin_token = secrets.token_hex(16)
        self.serving_port = free_port()
        self.metrics_port = free_port()
        self.root = f"http://127.0.0.1:{self.serving_port}"
        self.broker: DevBroker | None = None
        self.serving: ManagedProcess | None = None
        self.learner: ManagedProcess | None = None
        self.watcher: AdapterWatcher | None = None
        self.sim: Simulator | None = None
        self._sim_thread: threading.Thread | None = None
        self._eval_thread: threading.Thread | None = None
        self._evaluated: set[str] = set()
        self.eval_line = ""
        self.started = time.monotonic()

    @property
    def canary(self) -> bool:
        """Whether the learner runs canaries."""
        return canary_setting(self.config.learner_env, self.config.canary)

    @property
    def expected_cycle_seconds(self) -> float:
        return TINY_CYCLE_SECONDS if self.config.tiny else EMBEDDED_CPU_CYCLE_SECONDS

    # -- start ---------------------------------------------------------------------------------

    def start(self) -> None:
        from devtools.broker import DevBroker
        from loop.monitor import AdapterWatcher
        from loop.preferences import NoiseConfig
        from loop.processes import ManagedProcess, entry_point
        from loop.services import start_serving, wait_ready
        from loop.sim import SimConfig, Simulator
        from schemas.topics import DEFAULT_TOPICS

        self.data_dir.mkdir(parents=True, exist_ok=True)
        model_dir = self._model_dir()
        self.broker = DevBroker(log_path=self.data_dir / "broker.log").start()
        store = str(self.data_dir / "adapters")
        self.serving = start_serving(
            self._serving_env(model_dir, store), self.data_dir / "serving.log"
        )
        self.learner = ManagedProcess(
            "learner",
            [*entry_point("learner", "learner.cli"), *self._learner_args()],
            self._learner_env(model_dir, store),
            self.data_dir / "learner.log",
        ).start()
        self.watcher = AdapterWatcher(self.broker.bootstrap, DEFAULT_TOPICS.adapters).start()
        wait_ready(self.root, self.serving, self.config.ready_timeout)
        sim_config = SimConfig(
            base_url=self.root,
            api_key=self.api_key,
            preference=self.config.preference,
            comparisons=self.config.comparisons,
            concurrency=self.config.concurrency,
            rate=self.config.rate,
            noise=NoiseConfig(self.config.noise),
            correction_rate=self.config.correction_rate,
            thumbs_rate=self.config.thumbs_rate,
            max_tokens=self.config.max_tokens,
            seed=self.user_seed,
        )
        self.sim = Simulator(sim_config)
        self._start_users()
        self.started = time.monotonic()

    def _start_users(self) -> None:
        sim = self.sim
        assert sim is not None
        self._sim_thread = threading.Thread(
            target=lambda: asyncio.run(sim.run()), name="sim-users", daemon=True
        )
        self._sim_thread.start()

    # -- pause and resume the users (the acceptance run's rounds) ------------------------------

    def wait_users(self, timeout: float | None = None) -> None:
        """Until the users' thread ends (its comparison budget spent, or paused)."""
        if self._sim_thread is not None:
            self._sim_thread.join(timeout)

    def pause_users(self) -> None:
        """Users start no new comparison; returns once the ones in flight are done."""
        if self.sim is not None:
            self.sim.request_stop()
        self.wait_users(180)  # in-flight generations finish

    def resume_users(self, comparisons: int = 0) -> None:
        """The same users vote again in the background: up to ``comparisons`` in all since the
        start (0: until paused). Call after they stopped (``pause_users``, or their budget)."""
        assert self.sim is not None
        assert self._sim_thread is None or not self._sim_thread.is_alive(), "users still voting"
        self.sim.resume()
        self.sim.config = replace(self.sim.config, comparisons=comparisons)
        self._start_users()

    def _model_dir(self) -> str:
        if self.config.tiny:
            from devtools.tiny_model import write_tiny_model_dir

            path = self.data_dir / "tiny-model"
            if not (path / "config.json").is_file():
                write_tiny_model_dir(path)
            return str(path)
        from common.embedded_model import resolve_model_dir

        # Materialise once here rather than racing in two child processes.
        return str(resolve_model_dir(self.config.model_dir))

    def _serving_env(self, model_dir: str, store: str) -> dict[str, str]:
        from loop.services import serving_env

        assert self.broker is not None
        env = serving_env(
            model_dir=model_dir,
            bootstrap=self.broker.bootstrap,
            store=store,
            spool_dir=self.data_dir / "serving-spool",
            adapter_cache_dir=self.data_dir / "serving-adapter-cache",
            api_key=self.api_key,
            admin_token=self.admin_token,
        )
        split = self._split_threads("SERVING_TORCH_THREADS", self.config.serving_env, 0)
        return {**env, "SERVING_PORT": str(self.serving_port), **split, **self.config.serving_env}

    def _split_threads(self, name: str, overrides: dict[str, str], share: int) -> dict[str, str]:
        """``name`` = this service's share of ``split_threads`` when the demo splits the CPUs
        and nobody set it (in the demo's options or the environment)."""
        if not self.config.split_cpus or name in overrides or name in os.environ:
            return {}
        from common.cpu_budget import available_cpus

        return {name: str(split_threads(available_cpus())[share])}

    def _learner_args(self) -> list[str]:
        max_cycles = self.config.learner_max_cycles
        return ["run"] + ([] if max_cycles is None else ["--max-cycles", str(max_cycles)])

    def _learner_env(self, model_dir: str, store: str) -> dict[str, str]:
        assert self.broker is not None
        env = {
            "LEARNER_MODEL_DIR": model_dir,
            "LEARNER_KAFKA_BOOTSTRAP": self.broker.bootstrap,
            "LEARNER_DATA_DIR": str(self.data_dir / "learner"),
            "LEARNER_ADAPTER_STORE": store,
            "LEARNER_MIN_NEW_COMPARISONS": str(self.config.cycle_comparisons),
            "LEARNER_METRICS_PORT": str(self.metrics_port),
            "LEARNER_CANARY": "true" if self.config.canary else "false",
        }
        if self.config.tiny:
            # A tiny random model cannot pass quality gates; the demo shows the mechanics.
            # Its greedy answers are empty or repeat one token (sanity prompts off), and fast
            # learning rates let a hidden-size-16 model show a reward gain in one short cycle.
            env.update(
                {
                    "LEARNER_RM_MIN_ACCURACY": "0.0",
                    "LEARNER_RM_GATE_CONFIDENCE": "0",
                    "LEARNER_KL_BUDGET": "1000000",
                    "LEARNER_SANITY_PROMPTS": "[]",
                    "LEARNER_EVAL_CONFIG": json.dumps(
                        {"max_repeat_fraction": 1.0, "max_new_tokens": 16}
                    ),
                    "LEARNER_REWARD_CONFIG": json.dumps({"learning_rate": 5e-3, "num_epochs": 4}),
                    "LEARNER_PPO_CONFIG": json.dumps(
                        {"learning_rate": 5e-3, "num_steps": 8, "max_new_tokens": 16}
                    ),
                }
            )
        split = self._split_threads("LEARNER_TORCH_THREADS", self.config.learner_env, 1)
        return {**env, **split, **self.config.learner_env}

    # -- observe -------------------------------------------------------------------------------

    def observe(self) -> Observation:
        from loop.dashboard import Observation
        from loop.monitor import admin_adapters, scrape

        assert self.sim is not None and self.learner is not None and self.watcher is not None
        adapters = admin_adapters(self.root, self.admin_token)
        self._maybe_eval(adapters)
        learner_state = "running" if self.learner.running else f"exited ({self.learner.returncode})"
        return Observation(
            preference=self.config.preference,
            elapsed=time.monotonic() - self.started,
            sim=self.sim.stats.snapshot(),
            serving_metrics=scrape(f"{self.root}/metrics"),
            learner_metrics=scrape(f"http://127.0.0.1:{self.metrics_port}/metrics"),
            adapters=adapters,
            adapter_events=self.watcher.snapshot(),
            learner_state=learner_state,
            eval_line=self.eval_line,
            root=self.root,
            data_dir=str(self.data_dir),
            cycle_comparisons=self.config.cycle_comparisons,
            expected_cycle_seconds=self.expected_cycle_seconds,
        )

    def _maybe_eval(self, adapters: dict[str, Any] | None) -> None:
        """Blind eval of each newly serving version against the base, in the background."""
        from loop.eval import run_eval, write_outputs

        version = (adapters or {}).get("serving_version")
        if (
            not self.config.eval_prompts
            or not version
            or version == "base"
            or version in self._evaluated
            or (self._eval_thread is not None and self._eval_thread.is_alive())
        ):
            return
        self._evaluated.add(version)
        config = self.versus_base(version, limit=self.config.eval_prompts, concurrency=2)
        self.eval_line = f"{version}: evaluating on {self.config.eval_prompts} held-out prompts"

        def work() -> None:
            try:
                report = asyncio.run(run_eval(config))
                write_outputs(report, self.data_dir / f"eval-{version.replace('@', '-')}", config)
            except Exception as exc:  # shown on the dashboard; the demo goes on
                logger.exception("eval of %s failed", version)
                self.eval_line = f"{version}: eval failed ({exc})"
                return
            low, high = report.interval()
            words_a = report.a.summary()["mean_words"] or 0.0
            words_b = report.b.summary()["mean_words"] or 0.0
            self.eval_line = (
                f"{version}: win rate {report.win_rate:.2f} [{low:.2f}, {high:.2f}] "
                f"n={report.n}; words {words_a:.0f} vs {words_b:.0f}"
            )

        self._eval_thread = threading.Thread(target=work, name="eval", daemon=True)
        self._eval_thread.start()

    def versus_base(self, version: str, **options: Any) -> EvalConfig:
        """The blind evaluation of ``version`` against the base through this demo's serving
        (version pins with its admin token), under its preference and answer length, KL read
        from its adapter store; ``options`` are the rest of :class:`loop.eval.EvalConfig`."""
        from loop.eval import EvalConfig

        return EvalConfig(
            base_url=self.root,
            api_key=self.api_key,
            admin_token=self.admin_token,
            version_a=version,
            version_b="base",
            preference=self.config.preference,
            max_tokens=self.config.max_tokens,
            adapter_store=str(self.data_dir / "adapters"),
            **options,
        )

    def done(self, obs: Observation) -> str | None:
        """Why the demo should stop now, or None."""
        cfg = self.config
        if cfg.duration and obs.elapsed >= cfg.duration:
            return "duration reached"
        if cfg.until_swapped:
            new = [v for v in obs.sim.get("answers_by_version", {}) if v not in ("base", "?")]
            evaluating = self._eval_thread is not None and self._eval_thread.is_alive()
            if len(new) >= cfg.until_swapped and not evaluating:
                return f"answers served by {', '.join(sorted(new))}"
        for proc in (self.serving, self.learner):
            if proc is not None and not proc.running:
                return f"{proc.name} exited with {proc.returncode}"
        if (
            self._sim_thread is not None
            and not self._sim_thread.is_alive()
            and not (cfg.duration or cfg.until_swapped or cfg.comparisons)
        ):
            return "simulated users stopped"
        return None

    # -- stop ----------------------------------------------------------------------------------

    def shutdown(self, reason: str) -> dict[str, Any]:
        """Stop everything in the no-loss order and check that no event went missing."""
        logger.info("shutting down: %s", reason)
        summary: dict[str, Any] = {"reason": reason, "data_dir": str(self.data_dir)}
        self.pause_users()
        if self._eval_thread is not None:
            self._eval_thread.join(180)
        if self.serving is not None:
            summary["serving_exit"] = self.serving.stop(timeout=90)
        if self.learner is not None:
            summary["learner_exit"] = self.learner.stop(timeout=self.config.learner_stop_timeout)
        if self.sim is not None:
            summary["sim"] = self.sim.stats.snapshot()
        if self.watcher is not None:
            self.watcher.stop()
            summary["adapter_events"] = [e.__dict__ for e in self.watcher.snapshot()]
        summary["eval"] = self.eval_line
        if self.broker is not None:
            try:
                summary.update(self._loss_check(summary.get("sim", {})))
            except Exception as exc:
                logger.exception("event count failed")
                summary["loss_check_error"] = str(exc)
            self.broker.stop()
        (self.data_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        return summary

    def _loss_check(self, sim: dict[str, Any]) -> dict[str, Any]:
        from loop.monitor import count_events
        from schemas.topics import DEFAULT_TOPICS

        assert self.broker is not None
        found = count_events(
            self.broker.bootstrap, [DEFAULT_TOPICS.interactions, DEFAULT_TOPICS.feedback]
        )
        ok = sim.get("feedback_ok", {})
        expected = {
            "pair.served": sim.get("pairs", 0),
            "feedback.preference": ok.get("preference", 0),
            "feedback.rating": ok.get("rating", 0),
            "feedback.correction": ok.get("correction", 0),
        }
        missing = {k: v - found.get(k, 0) for k, v in expected.items() if found.get(k, 0) < v}
        return {
            "events_in_kafka": dict(found),
            "events_expected": expected,
            "events_missing": missing,
        }


def canary_setting(learner_env: dict[str, str], canary: bool) -> bool:
    """``canary`` (``--canary``), unless ``learner_env`` says otherwise: an explicit
    ``--learner-env LEARNER_CANARY=...`` wins, as every explicit setting does."""
    value = learner_env.get("LEARNER_CANARY")
    if value is None:
        return canary
    return value.strip().lower() in ("1", "true", "yes", "on", "t", "y")


def split_threads(cpus: int) -> tuple[int, int]:
    """Torch threads for serving and for the learner when they share ``cpus`` CPUs.

    Each sizing itself to every CPU puts two OpenMP teams on the same cores, and their threads
    spin at barriers while a peer waits for its core: on 2 cores the demo's first PPO iteration
    took 267 s beside serving, against 42 s alone (``bench/results/demo_first_adapter.md``; the same
    collapse as serving beside CPU-bound neighbours, ``bench/results/noisy_neighbour.md``).
    Serving gets the larger half: users wait on it."""
    serving = max(1, (cpus + 1) // 2)
    return serving, max(1, cpus - serving)


def benchmark_config(
    args: argparse.Namespace, learner_env: dict[str, str], canary: bool = False, **users: Any
) -> DemoConfig:
    """A demo run that a benchmark drives and measures itself: no automatic eval of each new
    version, the run directory and model from the benchmark's ``--data-dir`` and ``--tiny``,
    its ``--learner-env`` over ``learner_env``, a learner given a minute to stop, canaries
    only where the benchmark asks (a loop benchmark measures publish-to-serving without the
    users' decision in between); ``users`` are the simulated users' settings."""
    return DemoConfig(
        eval_prompts=0,
        data_dir=args.data_dir,
        tiny=args.tiny,
        canary=canary,
        learner_env=learner_env | env_pairs(args.learner_env, "LEARNER_"),
        learner_stop_timeout=60,
        # What they time is each service's own speed, as it was measured before.
        split_cpus=False,
        **users,
    )
