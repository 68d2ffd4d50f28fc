"""Validators shared by the services' settings classes (clear messages for bad values)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator

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
