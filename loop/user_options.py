"""The simulated users' command-line options, declared once for every command that runs them
(rlhf-sim, rlhf-demo, the acceptance run and the loop benchmark): each option has one name and
one meaning everywhere; only the defaults differ by command. Light on purpose: ``--help`` of
the demo must not import the API clients."""

from __future__ import annotations

import argparse

DEFAULT_PREFERENCE = "loop.preferences:concise"


def add_user_options(
    parser: argparse.ArgumentParser,
    *,
    comparisons: int,
    concurrency: int,
    noise: float = 1.0,
    rate: bool = True,
    preference: str = DEFAULT_PREFERENCE,
    comparisons_help: str = "pairs to vote on (0 = no limit)",
) -> None:
    """``--preference``, ``--comparisons``, ``--concurrency``, ``--noise`` and (with ``rate``)
    ``--rate``; ``comparisons`` 0 means until stopped."""
    parser.add_argument(
        "--preference",
        default=preference,
        help="module:function, or a built-in: concise, friendly, format",
    )
    parser.add_argument("--comparisons", type=int, default=comparisons, help=comparisons_help)
    parser.add_argument(
        "--concurrency", type=int, default=concurrency, help="simultaneous simulated users"
    )
    if rate:
        parser.add_argument(
            "--rate", type=float, default=0.0, help="max comparisons/s (0 = no cap)"
        )
    parser.add_argument(
        "--noise",
        type=float,
        default=noise,
        help="Bradley-Terry temperature: P(a>b) = sigmoid((u_a-u_b)/noise); 0 = deterministic",
    )
