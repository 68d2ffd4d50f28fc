"""Run an app under a real uvicorn on a free loopback port, in a background thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from devtools.broker import free_port
from serving.cli import uvicorn_config
from serving.settings import ServingSettings


@contextmanager
def live_server(
    app: FastAPI, graceful_timeout: int = 10, settings: ServingSettings | None = None
) -> Iterator[tuple[uvicorn.Server, int]]:
    """``settings``: configure uvicorn as ``serve`` does (``serving.cli.uvicorn_config``)."""
    port = free_port()
    if settings is not None:
        local = settings.model_copy(update={"host": "127.0.0.1", "port": port})
        config = uvicorn_config(local, app, "error")
    else:
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="error",
            timeout_graceful_shutdown=graceful_timeout,
        )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield server, port
    finally:
        server.should_exit = True
        thread.join(30)
