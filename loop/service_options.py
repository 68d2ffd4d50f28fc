"""``--serving-env`` / ``--learner-env KEY=VALUE``: extra settings for the service processes the
demo, the acceptance run and the benchmarks start, declared once. A key must carry its
service's prefix, checked at the command line before any process starts. ``--canary`` /
``--no-canary``: whether the learner those commands start runs canaries."""

from __future__ import annotations

import argparse
from collections.abc import Callable


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


def add_canary_option(p: argparse.ArgumentParser) -> None:
    """``--canary`` / ``--no-canary`` (default on): whether the learner publishes each new
    version as a canary for the users' votes to promote or roll back (LEARNER_CANARY)."""
    p.add_argument(
        "--canary",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="each new version first serves as a canary beside the serving one; the users' "
        "votes promote or roll it back (--no-canary: it serves everyone at once)",
    )
