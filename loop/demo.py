"""The whole loop on one machine, live: broker, serving, learner and simulated users.

Why one file (over 400 lines): the process orchestration, its live view and its command line
share ``DemoConfig`` and the run's state; ``benchmark_config`` serves the benchmarks that drive it.

One command (``rlhf-demo``) starts the development Kafka broker (``devtools.broker.DevBroker``),
the ``serve`` and ``learner run`` processes (configured only through their ``SERVING_*`` /
``LEARNER_*`` settings) on the embedded SmolLM2 (or ``--tiny``, a tiny random model for tests),
and simulated users voting under a preference function; a terminal dashboard shows pairs served,
feedback by kind, events produced / spooled / dropped, the learner's cycles and gates, adapter
versions published and swapped in, and how the serving version does against the base.

Ctrl-C (SIGINT), SIGTERM or SIGHUP (the terminal closed) stops it in the order that loses no
event: simulated users stop starting comparisons and finish the ones in flight; serving gets
SIGTERM and drains (its event logger flushes last); the learner gets SIGTERM; then every event
in the broker is counted and compared with what the users were served and said; then the broker
stops. The verdict and all numbers are written to ``{data_dir}/summary.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.cli import command_parser, config_from_args
from loop.user_options import add_user_options

# The rest is imported where it is used: ``rlhf-demo --help`` must answer at once, and the
# clients, metrics parser and dashboard (openai, httpx, prometheus_client, rich, pydantic
# schemas) take a noticeable part of a second to import, more on a busy machine.
if TYPE_CHECKING:
    from devtools.broker import DevBroker
    from loop.monitor import AdapterEvent, AdapterWatcher
    from loop.processes import ManagedProcess
    from loop.sim import Simulator

logger = logging.getLogger(__name__)


# What one learner cycle took in observed runs (docs/loop.md, "Observed runs"): about 3 minutes
# on the tiny model, about 30 on SmolLM2 on 2 CPU cores with the users still voting. Only for
# the outlook shown before the learner finished its first cycle; then its own time is used.
TINY_CYCLE_SECONDS = 180.0
EMBEDDED_CPU_CYCLE_SECONDS = 1800.0


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
    max_tokens: int = 64
    cycle_comparisons: int = 64  # LEARNER_MIN_NEW_COMPARISONS
    until_swapped: int = 0  # stop once answers came from this many new versions
    eval_prompts: int = 8  # held-out prompts per automatic eval of a new version (0 = off)
    ready_timeout: float = 600.0
    learner_stop_timeout: float = 300.0  # SIGTERM lets it finish the step it is in
    refresh: float = 1.0
    serving_env: dict[str, str] = field(default_factory=dict)
    learner_env: dict[str, str] = field(default_factory=dict)


@dataclass
class Observation:
    preference: str
    elapsed: float
    sim: dict[str, Any]
    serving_metrics: dict[str, float]
    learner_metrics: dict[str, float]
    adapters: dict[str, Any] | None
    adapter_events: list[AdapterEvent]
    learner_state: str
    eval_line: str
    root: str = ""  # serving's root URL
    data_dir: str = ""
    cycle_comparisons: int = 0  # what the demo asked for, until the learner reports its own
    expected_cycle_seconds: float = 0.0  # until the learner finished a cycle


class Demo:
    def __init__(self, config: DemoConfig) -> None:
        self.config = config
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        self.data_dir = (config.data_dir or Path("var/demo") / f"run-{stamp}").resolve()
        from devtools.broker import free_port

        self.api_key = "sim-" + secrets.token_hex(8)
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
    def expected_cycle_seconds(self) -> float:
        return TINY_CYCLE_SECONDS if self.config.tiny else EMBEDDED_CPU_CYCLE_SECONDS

    # -- start ---------------------------------------------------------------------------------

    def start(self) -> None:
        from devtools.broker import DevBroker
        from loop.monitor import AdapterWatcher
        from loop.preferences import NoiseConfig
        from loop.processes import ManagedProcess, entry_point
        from loop.sim import SimConfig, Simulator
        from schemas.topics import DEFAULT_TOPICS

        self.data_dir.mkdir(parents=True, exist_ok=True)
        model_dir = self._model_dir()
        self.broker = DevBroker(log_path=self.data_dir / "broker.log").start()
        store = str(self.data_dir / "adapters")
        self.serving = ManagedProcess(
            "serving",
            entry_point("serve", "serving.cli"),
            self._serving_env(model_dir, store),
            self.data_dir / "serving.log",
        ).start()
        self.learner = ManagedProcess(
            "learner",
            [*entry_point("learner", "learner.cli"), "run"],
            self._learner_env(model_dir, store),
            self.data_dir / "learner.log",
        ).start()
        self.watcher = AdapterWatcher(self.broker.bootstrap, DEFAULT_TOPICS.adapters).start()
        self._wait_ready()
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
            seed=int(time.time()) % 10_000,
        )
        self.sim = Simulator(sim_config)
        sim = self.sim
        self._sim_thread = threading.Thread(
            target=lambda: asyncio.run(sim.run()), name="sim-users", daemon=True
        )
        self._sim_thread.start()
        self.started = time.monotonic()

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
        assert self.broker is not None
        env = {
            "SERVING_MODEL_DIR": model_dir,
            "SERVING_PORT": str(self.serving_port),
            "SERVING_KAFKA_BOOTSTRAP": self.broker.bootstrap,
            "SERVING_SPOOL_DIR": str(self.data_dir / "serving-spool"),
            "SERVING_ADAPTER_STORE": store,
            "SERVING_ADAPTER_CACHE_DIR": str(self.data_dir / "serving-adapter-cache"),
            "SERVING_API_KEYS": json.dumps([self.api_key]),
            "SERVING_ADMIN_TOKEN": self.admin_token,
            "SERVING_HMAC_KEY": secrets.token_hex(16),
        }
        return {**env, **self.config.serving_env}

    def _learner_env(self, model_dir: str, store: str) -> dict[str, str]:
        assert self.broker is not None
        env = {
            "LEARNER_MODEL_DIR": model_dir,
            "LEARNER_KAFKA_BOOTSTRAP": self.broker.bootstrap,
            "LEARNER_DATA_DIR": str(self.data_dir / "learner"),
            "LEARNER_ADAPTER_STORE": store,
            "LEARNER_MIN_NEW_COMPARISONS": str(self.config.cycle_comparisons),
            "LEARNER_METRICS_PORT": str(self.metrics_port),
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
        return {**env, **self.config.learner_env}

    def _wait_ready(self) -> None:
        import httpx

        assert self.serving is not None
        deadline = time.monotonic() + self.config.ready_timeout
        while time.monotonic() < deadline:
            if not self.serving.running:
                raise RuntimeError(
                    f"serving exited with {self.serving.returncode}:\n{self.serving.log_tail()}"
                )
            try:
                if httpx.get(f"{self.root}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(
            f"serving not ready after {self.config.ready_timeout:.0f}s:\n{self.serving.log_tail()}"
        )

    # -- observe -------------------------------------------------------------------------------

    def observe(self) -> Observation:
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
        from loop.eval import EvalConfig, run_eval, write_outputs

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
        config = EvalConfig(
            base_url=self.root,
            api_key=self.api_key,
            admin_token=self.admin_token,
            version_a=version,
            version_b="base",
            preference=self.config.preference,
            limit=self.config.eval_prompts,
            max_tokens=self.config.max_tokens,
            concurrency=2,
            adapter_store=str(self.data_dir / "adapters"),
        )
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
        if self.sim is not None:
            self.sim.request_stop()
        if self._sim_thread is not None:
            self._sim_thread.join(180)  # in-flight generations finish
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


def run(config: DemoConfig, plain: bool = False) -> dict[str, Any]:
    from common.signals import StopSignals, stop_reason

    demo = Demo(config)
    _log_to_file(demo.data_dir)
    # The children run in their own sessions (a terminal's Ctrl-C reaches only the demo), so
    # whatever ends the demo must stop them first: Ctrl-C, SIGTERM (kill) and SIGHUP (terminal
    # closed) all raise here and go through the same no-loss shutdown; a second signal during
    # it is only logged.
    with StopSignals("the demo") as signals:
        try:
            _say("\n".join(banner(demo)))
            demo.start()
            reason = _dashboard_loop(demo, plain)
        except KeyboardInterrupt as exc:
            reason = stop_reason(exc)
        except Exception as exc:
            logger.exception("demo failed")
            reason = f"error: {exc}"
        finally:
            signals.stopping()
        _say(f"stopping ({reason}): users, serving (drain), learner, then counting events...")
        return demo.shutdown(reason)


def banner(demo: Demo) -> list[str]:
    """What the person starting the demo needs before the dashboard appears (serving takes a
    while to load the model)."""
    from loop.dashboard import display_path, first_adapter_estimate

    return [
        f"rlhf-demo: preference {demo.config.preference}",
        f"  chat API      {demo.root}/v1 (OpenAI-compatible)",
        f"  voting page   {demo.root}/ (open it in a browser to vote too)",
        f"  data and logs {display_path(str(demo.data_dir))}",
        "  " + first_adapter_estimate(demo.config.cycle_comparisons, demo.expected_cycle_seconds),
        f"starting the broker, serving and the learner; serving may take up to "
        f"{demo.config.ready_timeout:.0f} s to load the model...",
    ]


def _say(text: str) -> None:
    """Print for the person watching; after SIGHUP the terminal may be gone, and a failed print
    must not stop the shutdown (logs go to the data dir anyway)."""
    try:
        print(text, flush=True)
    except OSError:
        logger.info("terminal gone; not shown: %s", text)


def _dashboard_loop(demo: Demo, plain: bool) -> str:
    from loop.dashboard import render_rich, render_text

    if not plain and sys.stdout.isatty():
        try:
            from rich.live import Live
        except ImportError:
            plain = True
        else:
            obs = demo.observe()
            # Redrawn once per observation (the view fits itself to the terminal on each draw).
            with Live(render_rich(obs), auto_refresh=False, screen=False) as live:
                while (reason := demo.done(obs)) is None:
                    time.sleep(demo.config.refresh)
                    obs = demo.observe()
                    live.update(render_rich(obs), refresh=True)
            return reason
    last_print = 0.0
    while True:
        obs = demo.observe()
        if (reason := demo.done(obs)) is not None:
            return reason
        if time.monotonic() - last_print >= 10 * demo.config.refresh:
            print(render_text(obs), flush=True)
            last_print = time.monotonic()
        time.sleep(demo.config.refresh)


def _log_to_file(data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    from common.logs import configure_logging

    configure_logging(file=data_dir / "demo.log")


def env_pairs(values: list[str], prefix: str = "") -> dict[str, str]:
    """``KEY=VALUE`` items as a dict. Every key must start with ``prefix``: a setting without
    its service's prefix (``REWARD_CONFIG`` for ``LEARNER_REWARD_CONFIG``) would reach the
    process and be ignored by its settings, so a long run would measure the wrong recipe."""
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"{item!r} is not KEY=VALUE")
        if not key.startswith(prefix):
            raise argparse.ArgumentTypeError(
                f"{key!r} is not a {prefix}* setting: did you mean {prefix + key!r}?"
            )
        out[key] = value
    return out


def env_setting(prefix: str) -> Callable[[str], str]:
    """An argparse ``type=`` for one ``KEY=VALUE`` item of a service: a bad item is a usage
    error at the command line, before any process starts (see :func:`env_pairs`)."""

    def check(item: str) -> str:
        env_pairs([item], prefix)
        return item

    check.__name__ = f"{prefix}KEY=VALUE"
    return check


def add_env_option(p: argparse.ArgumentParser, service: str) -> None:
    """``--<service>-env KEY=VALUE`` (repeatable): an extra setting for that service's process,
    whose key must carry the service's prefix (``LEARNER_``, ``SERVING_``)."""
    prefix = f"{service.upper()}_"
    p.add_argument(
        f"--{service}-env",
        action="append",
        default=[],
        type=env_setting(prefix),
        metavar="KEY=VALUE",
        help=f"extra {prefix}* setting for the {service} process (repeatable)",
    )


def benchmark_config(
    args: argparse.Namespace, learner_env: dict[str, str], **users: Any
) -> DemoConfig:
    """A demo run that a benchmark drives and measures itself: no automatic eval of each new
    version, the run directory and model from the benchmark's ``--data-dir`` and ``--tiny``,
    its ``--learner-env`` over ``learner_env``, a learner given a minute to stop; ``users``
    are the simulated users' settings."""
    return DemoConfig(
        eval_prompts=0,
        data_dir=args.data_dir,
        tiny=args.tiny,
        learner_env=learner_env | env_pairs(args.learner_env, "LEARNER_"),
        learner_stop_timeout=60,
        **users,
    )


def build_parser() -> argparse.ArgumentParser:
    p = command_parser(__doc__, prog="rlhf-demo")
    add_user_options(p, comparisons=0, concurrency=4)
    p.add_argument(
        "--duration", type=float, default=0.0, help="stop after this many seconds (0 = no limit)"
    )
    p.add_argument(
        "--until-swapped",
        type=int,
        default=0,
        help="stop once answers came from N new adapter versions (0 = off)",
    )
    p.add_argument(
        "--model-dir", default="embedded", help="'embedded' (SmolLM2-135M) or a model directory"
    )
    p.add_argument("--tiny", action="store_true", help="tiny random model (tests, CI)")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="logs, store, adapters, summary (default: var/demo/run-<time>)",
    )
    p.add_argument("--max-tokens", type=int, default=64, help="max tokens per answer")
    p.add_argument(
        "--cycle-comparisons",
        type=int,
        default=64,
        help="new comparisons that start a learner cycle",
    )
    p.add_argument(
        "--eval-prompts",
        type=int,
        default=8,
        help="held-out prompts for the automatic eval of each new version (0 = off)",
    )
    p.add_argument(
        "--ready-timeout",
        type=float,
        default=600.0,
        help="seconds serving may take to load the model and answer /readyz",
    )
    p.add_argument(
        "--learner-stop-timeout",
        type=float,
        default=300.0,
        help="seconds the learner may take to stop after SIGTERM before SIGKILL",
    )
    add_env_option(p, "serving")
    add_env_option(p, "learner")
    p.add_argument("--plain", action="store_true", help="plain text instead of the rich view")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(
        DemoConfig,
        args,
        serving_env=env_pairs(args.serving_env, "SERVING_"),
        learner_env=env_pairs(args.learner_env, "LEARNER_"),
    )
    summary = run(config, plain=args.plain)
    _say(
        json.dumps(
            {
                k: summary.get(k)
                for k in (
                    "reason",
                    "events_in_kafka",
                    "events_expected",
                    "events_missing",
                    "eval",
                    "data_dir",
                )
            },
            indent=2,
            default=str,
        )
    )
    failed = (
        summary.get("events_missing")
        or "loss_check_error" in summary
        or str(summary.get("reason", "")).startswith(("error", "serving exited", "learner exited"))
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
