"""One real ``serve`` process under the fault suite's abusive requests: plain HTTP calls to it,
and the row that records a refused input together with whether the replica still answers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from loop.faults.rows import FaultRow
from loop.faults.world import SERVING_MODEL_NAME, World


class Replica:
    """The serving process under test and plain HTTP calls to it."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.http = httpx.Client(base_url=world.root, timeout=120)
        self.auth = {"Authorization": f"Bearer {world.api_key}"}
        self.admin = {"Authorization": f"Bearer {world.admin_token}"}

    def chat(self, content: str, **extra: Any) -> httpx.Response:
        body = {"model": SERVING_MODEL_NAME, "messages": [{"role": "user", "content": content}]}
        return self.http.post(
            "/v1/chat/completions", json=body | {"max_tokens": 8} | extra, headers=self.auth
        )

    def answered_by(self) -> str:
        """The adapter version that answers a plain request now (and that one is served)."""
        resp = self.chat("Say something short.")
        resp.raise_for_status()
        return str(resp.json()["choices"][0]["adapter_version"])

    def admin_post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return self.http.post(path, json=body, headers=self.admin)


def input_row(
    name: str, action: str, check: Callable[[], tuple[bool, str]], replica: Replica
) -> FaultRow:
    t0 = time.monotonic()
    ok, outcome = check()
    healthy = replica.chat("Still there?").status_code == 200
    return FaultRow(
        "input",
        name,
        action,
        f"{outcome}; next request 200: {healthy}",
        passed=ok and healthy,
        seconds=time.monotonic() - t0,
    )
