"""The simulated users' command-line options, declared once for every command that runs them
(rlhf-sim, rlhf-demo, rlhf-eval, the acceptance run and the benchmarks): each option has one
name and one meaning everywhere; a command that needs another default says why in its help.
Light on purpose: ``--help`` of the demo must not import the API clients."""

from __future__ import annotations

import argparse

DEFAULT_PREFERENCE = "loop.preferences:concise"
# The answer length limit (new tokens per answer) of every command and config unless it says why
# not (``add_max_tokens_option``'s ``why``).
DEFAULT_MAX_TOKENS = 96


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


def add_max_tokens_option(
    parser: argparse.ArgumentParser,
    default: int = DEFAULT_MAX_TOKENS,
    why: str = "",
    aliases: tuple[str, ...] = (),
) -> None:
    """``--max-tokens`` (into ``max_tokens``): the answer length limit the users see. A command
    with another default than :data:`DEFAULT_MAX_TOKENS` must say ``why``, shown in its help;
    ``aliases`` are older names of the option that still work."""
    if default != DEFAULT_MAX_TOKENS and not why:
        raise ValueError(f"--max-tokens {default} instead of {DEFAULT_MAX_TOKENS} needs a why")
    reason = f" ({why})" if why else ""
    parser.add_argument(
        "--max-tokens",
        *aliases,
        dest="max_tokens",
        type=int,
        default=default,
        help=f"max new tokens per answer{reason}",
    )
