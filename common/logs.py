"""Logging set-up shared by the ``serve`` and ``learner`` command lines."""

from __future__ import annotations

import logging


def quiet_kafka_logging() -> None:
    """kafka-python logs every metadata refresh at INFO (about one a second here): keep its
    warnings and errors, drop the chatter."""
    logging.getLogger("kafka").setLevel(max(logging.WARNING, logging.getLogger().level))
