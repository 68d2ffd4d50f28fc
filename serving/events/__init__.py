"""Event logging to Kafka with a disk spool: ``EventLogger`` (see ``serving.events.logger``)."""

from serving.events.logger import EventLogger

__all__ = ["EventLogger"]
