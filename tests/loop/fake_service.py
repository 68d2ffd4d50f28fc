"""A stand-in for the serving HTTP API (contract only), run in a thread for client tests.

Answers are deterministic functions of (version, prompt, seed, index): "base" answers are long,
"policy@v1" answers short, so a concise-preferring evaluation must favour policy@v1. Every
request and feedback body is recorded for the tests to inspect.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from typing import Any

import uvicorn
from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse

from devtools.broker import free_port

WORDS = [
    "the",
    "a",
    "fox",
    "runs",
    "over",
    "some",
    "lazy",
    "dog",
    "near",
    "an",
    "old",
    "river",
    "bank",
    "today",
]
ADMIN = "admin-secret"
LENGTHS = {"base": (20, 60), "policy@v1": (3, 12)}


def answer(version: str, prompt: str, seed: int | None, index: int) -> str:
    rng = random.Random(f"{version}|{prompt}|{seed}|{index}")
    low, high = LENGTHS.get(version, (5, 40))
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high))) + "."


class FakeService:
    def __init__(self, serving_version: str = "base") -> None:
        self.serving_version = serving_version
        self.chats: list[dict[str, Any]] = []
        self.served: dict[str, dict[str, Any]] = {}  # pair_id -> {answers, user}
        self.responses: dict[str, dict[str, Any]] = {}  # response_id -> {text, pair_id, user}
        self.feedback: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.app = self._build()
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        def models() -> dict[str, Any]:
            return {
                "object": "list",
                "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "test"}],
            }

        @app.post("/v1/chat/completions")
        async def chat(request: Request, x_admin_token: str | None = Header(None)) -> JSONResponse:
            body = await request.json()
            version = self.serving_version
            if body.get("adapter_version") and x_admin_token == ADMIN:
                version = body["adapter_version"]
            n = body.get("k", 2) if body.get("pair") else body.get("n", 1)
            prompt = body["messages"][-1]["content"]
            pair_id = f"pair-{uuid.uuid4().hex}" if body.get("pair") else None
            choices: list[dict[str, Any]] = []
            texts: list[str] = []
            for i in range(n):
                text = answer(version, prompt, body.get("seed"), i)
                texts.append(text)
                rid = f"resp-{uuid.uuid4().hex}"
                choices.append(
                    {
                        "index": i,
                        "finish_reason": "stop",
                        "response_id": rid,
                        "adapter_version": version,
                        "message": {"role": "assistant", "content": text},
                    }
                )
                with self.lock:
                    self.responses[rid] = {
                        "text": text,
                        "pair_id": pair_id,
                        "user": body.get("user"),
                    }
            with self.lock:
                self.chats.append(body)
                if pair_id:
                    self.served[pair_id] = {
                        "answers": texts,
                        "ids": [c["response_id"] for c in choices],
                        "user": body.get("user"),
                    }
            tokens = sum(len(t.split()) for t in texts)
            return JSONResponse(
                {
                    "id": "chatcmpl-x",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": "fake-model",
                    "choices": choices,
                    "pair_id": pair_id,
                    "usage": {
                        "prompt_tokens": 5,
                        "completion_tokens": tokens,
                        "total_tokens": tokens + 5,
                    },
                }
            )

        @app.post("/v1/feedback")
        async def feedback(request: Request) -> JSONResponse:
            body = await request.json()
            with self.lock:
                self.feedback.append(body)
            return JSONResponse(
                {"object": "feedback", "event_id": uuid.uuid4().hex, "kind": "x", "accepted": True}
            )

        return app

    def __enter__(self) -> FakeService:
        self.runner = ThreadedServer(self.app, self.port).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.runner.stop()


class ThreadedServer:
    """uvicorn in a daemon thread (lifespan included), for real-HTTP client tests."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise TimeoutError("server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
