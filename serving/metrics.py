"""Prometheus metrics of the HTTP layer (default registry, names with units, prefix
``rlhf_serving_``), and the ASGI middleware that counts requests and caps body size.

Request metrics are labelled by the matched route template (``/v1/chat/completions``), never
the raw path, so label cardinality stays bounded. Engine statistics and the adapter versions
are read at scrape time (``refresh``) from the running app. The middleware is plain ASGI, not
``BaseHTTPMiddleware``, so it neither buffers streamed responses nor breaks cancellation.
"""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import HTTPException
from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.errors import error_body

REQUESTS = Counter(
    "rlhf_serving_http_requests_total",
    "HTTP requests by route, method, status",
    ["route", "method", "status"],
)
LATENCY = Histogram(
    "rlhf_serving_http_request_duration_seconds",
    "HTTP request latency until the last body byte, by route",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160),
)
IN_FLIGHT = Gauge("rlhf_serving_http_requests_in_flight", "HTTP requests being answered")
PAIRS_SERVED = Counter("rlhf_serving_pairs_served_total", "comparisons (pairs of K) served")
PAIRS_IDENTICAL = Counter(
    "rlhf_serving_pairs_identical_total",
    "pairs whose answers were all the same text, served and logged as plain answers",
)
PAIRS_NOT_SHOWN = Counter(
    "rlhf_serving_pairs_not_shown_total",
    "pairs whose answers differed too little to ask for a vote (informative pairing): the "
    "first answer was served alone",
)
RESPONSES_SERVED = Counter("rlhf_serving_responses_served_total", "answers served")
COMPLETION_TOKENS = Counter("rlhf_serving_completion_tokens_total", "tokens generated and served")
PROMPT_TOKENS = Counter("rlhf_serving_prompt_tokens_total", "prompt tokens of served requests")
FEEDBACK = Counter(
    "rlhf_serving_feedback_total", "feedback accepted, by kind and value", ["kind", "value"]
)
FEEDBACK_REJECTED = Counter(
    "rlhf_serving_feedback_rejected_total", "feedback refused, by reason", ["reason"]
)
EMIT_ERRORS = Counter(
    "rlhf_serving_event_build_errors_total",
    "served events that could not be built (answer was still served)",
)
ENGINE_QUEUE = Gauge("rlhf_serving_engine_queue_depth", "requests waiting for the engine")
ENGINE_RUNNING = Gauge("rlhf_serving_engine_running", "sequences the engine is decoding")
ENGINE_BATCH = Gauge("rlhf_serving_engine_batch_size", "sequences in the engine's last step")
ENGINE_TOKENS = Gauge(
    "rlhf_serving_engine_tokens_generated",
    "tokens the engine generated since start (engine's own count)",
)
ADAPTER = Gauge(
    "rlhf_serving_adapter_info", "1 for the adapter version in each role", ["role", "version"]
)
READY = Gauge("rlhf_serving_ready", "1 when the model and the serving adapter are loaded")


def refresh(services: Any) -> None:
    """Copy engine and adapter state into gauges just before a scrape (the event logger and the
    adapter manager export their own metrics on the same registry)."""
    READY.set(1 if services.engine_started and services.adapters.ready() else 0)
    stats = services.engine.stats()
    ENGINE_QUEUE.set(stats.queue_depth)
    ENGINE_RUNNING.set(stats.running)
    ENGINE_BATCH.set(stats.last_batch_size)
    ENGINE_TOKENS.set(stats.tokens_generated_total)
    ADAPTER.clear()
    ADAPTER.labels("serving", services.adapters.serving_version()).set(1)
    canary = services.adapters.canary_version()
    if canary:
        ADAPTER.labels("canary", canary).set(1)


class HTTPMetricsMiddleware:
    """Counts and times every HTTP request; refuses bodies over ``max_body_bytes`` with 413."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}
        IN_FLIGHT.inc()

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            if self._declared_too_large(scope):
                await self._too_large(send_wrapper)
            else:
                await self.app(scope, self._capped(receive), send_wrapper)
        finally:
            IN_FLIGHT.dec()
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            REQUESTS.labels(label, scope["method"], str(status["code"])).inc()
            LATENCY.labels(label).observe(time.perf_counter() - start)

    def _declared_too_large(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                return value.isdigit() and int(value) > self.max_body_bytes
        return False

    def _capped(self, receive: Receive) -> Receive:
        seen = {"bytes": 0}

        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen["bytes"] += len(message.get("body", b""))
                if seen["bytes"] > self.max_body_bytes:
                    # An HTTPException passes FastAPI's body parsing unchanged (any other error
                    # would become a 400) and reaches the OpenAI-shaped error handler.
                    raise HTTPException(413, f"request body exceeds {self.max_body_bytes} bytes")
            return message

        return wrapped

    async def _too_large(self, send: Send) -> None:
        body = json.dumps(
            error_body(
                413, f"request body exceeds {self.max_body_bytes} bytes", code="request_too_large"
            )
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
