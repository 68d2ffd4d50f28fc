"""Validators shared by the services' settings classes (clear messages for bad values)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Self

from pydantic import AfterValidator, BaseModel, Field, model_validator

from schemas.topics import DEFAULT_TOPICS, Topics

_HOSTPORT = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})$")


def check_bootstrap_servers(value: str) -> str:
    """Kafka bootstrap list: comma-separated host:port pairs."""
    servers = [s.strip() for s in value.split(",") if s.strip()]
    if not servers:
        raise ValueError("must name at least one broker as host:port")
    for server in servers:
        match = _HOSTPORT.match(server)
        if not match:
            raise ValueError(f"{server!r} is not host:port (for example 127.0.0.1:9092)")
        if not 0 < int(match.group(2)) < 65536:
            raise ValueError(f"{server!r}: port must be 1-65535")
    return ",".join(servers)


def check_model_dir(value: str) -> str:
    """'embedded' (the packaged SmolLM2) or an existing local model directory."""
    if value in ("", "embedded"):
        return "embedded"
    path = Path(value).expanduser()
    if not path.is_dir():
        raise ValueError(f"model directory {value!r} does not exist")
    if not (path / "config.json").is_file():
        raise ValueError(f"{value!r} is not a model directory (config.json missing)")
    return str(path)


# Field types for the settings classes: the check runs wherever the type is used.
BootstrapServers = Annotated[str, AfterValidator(check_bootstrap_servers)]
ModelDir = Annotated[str, AfterValidator(check_model_dir)]


class TopicSettings(BaseModel):
    """The three topic names, one group in both services' settings (``*_TOPIC_INTERACTIONS``,
    ``*_TOPIC_FEEDBACK``, ``*_TOPIC_ADAPTERS``), defaulted from ``schemas.topics`` and checked
    to differ: two kinds of event on one topic would reach consumers that do not expect them."""

    topic_interactions: str = Field(DEFAULT_TOPICS.interactions, min_length=1)
    topic_feedback: str = Field(DEFAULT_TOPICS.feedback, min_length=1)
    topic_adapters: str = Field(DEFAULT_TOPICS.adapters, min_length=1)

    @model_validator(mode="after")
    def _topics_distinct(self) -> Self:
        names = [self.topic_interactions, self.topic_feedback, self.topic_adapters]
        if len(set(names)) != len(names):
            raise ValueError("the interactions, feedback and adapters topics must differ")
        return self

    def topics(self) -> Topics:
        return Topics(
            interactions=self.topic_interactions,
            feedback=self.topic_feedback,
            adapters=self.topic_adapters,
        )
