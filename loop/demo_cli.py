"""``rlhf-demo``: the whole loop on one machine, live: broker, serving, learner and simulated users.

One command starts the development Kafka broker, the ``serve`` and ``learner run`` processes on
the embedded SmolLM2 (or ``--tiny``, a tiny random model for tests), and simulated users voting
under a preference function; a terminal dashboard shows pairs served, feedback by kind, events
produced / spooled / dropped, the learner's cycles and gates, adapter versions published and
swapped in, the running canary and its votes (each new version first serves as a canary that
the users' votes promote or roll back; ``--no-canary`` publishes straight to everyone), and how
the serving version does against the base (:mod:`loop.demo` runs it, :mod:`loop.dashboard`
draws it).

Ctrl-C (SIGINT), SIGTERM or SIGHUP (the terminal closed) stops it in the order that loses no
event: simulated users stop starting comparisons and finish the ones in flight; serving gets
SIGTERM and drains (its event logger flushes last); the learner gets SIGTERM; then every event
in the broker is counted and compared with what the users were served and said; then the broker
stops. The verdict and all numbers are written to ``{data_dir}/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from common.cli import command_parser, config_from_args
from loop.demo import DEMO_MAX_TOKENS, Demo, DemoConfig
from loop.service_options import add_canary_option, add_env_option, env_pairs
from loop.user_options import add_max_tokens_option, add_user_options

logger = logging.getLogger(__name__)


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
    add_max_tokens_option(
        p, DEMO_MAX_TOKENS, why="shorter answers on CPU, so cycles and swaps come round sooner"
    )
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
    add_canary_option(p)
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
