"""Logging set-up shared by every command line (``serve``, ``learner``, the loop and bench
scripts): one format, to stderr or a file, kafka-python's chatter kept down."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str | int = logging.INFO, file: Path | str | None = None) -> None:
    """The root logger at ``level`` (a name such as "info" or a number), to ``file`` if given,
    else stderr."""
    if isinstance(level, str):
        level = level.upper()
    target = {"filename": str(file)} if file is not None else {"stream": sys.stderr}
    logging.basicConfig(level=level, format=LOG_FORMAT, force=True, **target)
    quiet_kafka_logging()


def quiet_kafka_logging() -> None:
    """kafka-python logs every metadata refresh at INFO (about one a second here): keep its
    warnings and errors, drop the chatter."""
    logging.getLogger("kafka").setLevel(max(logging.WARNING, logging.getLogger().level))
