"""The ``serve`` CLI's settings, and the app under a real uvicorn on a loopback port: the
openai client streaming over real HTTP, graceful shutdown draining in-flight requests, and the
client address behind a proxy (X-Forwarded-For) that the per-address limits count by."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import openai
import pytest
import uvicorn

from serving.app import create_app
from serving.cli import build_parser, main, settings_from_args, uvicorn_config
from serving.engines.fake import FakeEngine
from tests.serving.fakes import FakeAdapters, RecordingEvents
from tests.serving.live import live_server
from tests.support.serving import API_KEY, PAGE_CHAT, make_settings, page_headers


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--host", "--port", "--engine", "--model-dir", "--kafka-bootstrap"):
        assert flag in out


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVING_PORT", "9001")
    monkeypatch.setenv("SERVING_ENGINE", "fake")
    settings = settings_from_args(build_parser().parse_args(["--port", "9100", "--no-kafka"]))
    assert (settings.port, settings.engine, settings.kafka_enabled) == (9100, "fake", False)
    settings = settings_from_args(build_parser().parse_args(["--kafka-bootstrap", "h:1"]))
    assert (settings.port, settings.kafka_bootstrap) == (9001, "h:1")
    defaults = settings_from_args(build_parser().parse_args([]))
    assert defaults.kafka_enabled is True


def test_invalid_settings_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--kafka-bootstrap", "no-port-here"]) == 2
    assert "kafka_bootstrap" in capsys.readouterr().err


class _Served:
    def __init__(self, server: uvicorn.Server, port: int, events: RecordingEvents) -> None:
        self.server, self.port, self.events = server, port, events
        self.events_at_stop: list[object] | None = None
        self.engine = FakeEngine()

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"http://127.0.0.1:{self.port}/v1", api_key=API_KEY, max_retries=0
        )


@contextmanager
def serve(token_delay: float) -> Iterator[_Served]:
    engine = FakeEngine(token_delay=token_delay)
    events = RecordingEvents()
    app = create_app(make_settings(), engine=engine, events=events, adapters=FakeAdapters(engine))
    original_stop = events.stop
    with live_server(app) as (server, port):
        served = _Served(server, port, events)
        served.engine = engine

        async def recording_stop() -> None:
            served.events_at_stop = list(events.events)
            await original_stop()

        events.stop = recording_stop  # type: ignore[method-assign]
        yield served


def test_streaming_over_real_http() -> None:
    with serve(token_delay=0.02) as s:
        stream = s.client().chat.completions.create(
            model="smollm2-135m-instruct",
            messages=[{"role": "user", "content": "stream me"}],
            stream=True,
            extra_body={"pair": True},
        )
        arrivals, text = [], {0: "", 1: ""}
        for chunk in stream:
            for c in chunk.choices:
                if c.delta.content:
                    arrivals.append(time.monotonic())
                    text[c.index] += c.delta.content
        # Increments arrive spread out as they are decoded, not in one buffered burst.
        assert arrivals[-1] - arrivals[0] > 0.04
        (event,) = s.events.of_kind("pair.served")
        assert [text[i] for i in range(2)] == [event.responses[j].text for j in event.shown_order]


def test_graceful_shutdown_drains_and_then_flushes() -> None:
    with serve(token_delay=0.1) as s:
        result: dict[str, object] = {}

        def slow_request() -> None:
            result["r"] = s.client().chat.completions.create(
                model="smollm2-135m-instruct",
                extra_body={"pair": True},
                messages=[{"role": "user", "content": "take your time"}],
            )

        worker = threading.Thread(target=slow_request)
        worker.start()
        time.sleep(0.15)  # the request is being generated
        s.server.should_exit = True
        worker.join(15)
        response = result["r"]
        assert len(response.choices) == 2  # type: ignore[attr-defined]
        deadline = time.monotonic() + 10
        while s.events_at_stop is None and time.monotonic() < deadline:
            time.sleep(0.02)
        # The event logger was stopped (flushed) only after the drained request was logged.
        assert s.events_at_stop is not None
        assert [e.kind for e in s.events_at_stop] == ["pair.served"]  # type: ignore[attr-defined]
        with pytest.raises(openai.APIConnectionError):
            s.client().models.list()


def test_client_hang_up_cancels_generation() -> None:
    with serve(token_delay=0.5) as s:
        engine = s.engine
        slow = openai.OpenAI(
            base_url=f"http://127.0.0.1:{s.port}/v1", api_key=API_KEY, max_retries=0, timeout=0.3
        )
        with pytest.raises(openai.APITimeoutError):
            slow.chat.completions.create(
                model="smollm2-135m-instruct", messages=[{"role": "user", "content": "never mind"}]
            )
        deadline = time.monotonic() + 1.0  # the answer takes >= 1.5 s (3+ words x 0.5 s)
        while engine.stats().running and time.monotonic() < deadline:
            time.sleep(0.05)
        # The engine stopped working for the departed client, long before the answer's
        # 1.5-6 s would have elapsed, and nothing was logged as served.
        assert engine.stats().running == 0
        assert not s.events.events


def test_idle_keep_alive_connection_outlives_the_clients_expiry() -> None:
    """An idle connection stays open longer than httpx's 5 s keep-alive expiry, so the client
    (not the server) closes it and a request sent on it cannot race the server's close."""
    import socket

    engine = FakeEngine()
    settings = make_settings()
    app = create_app(
        settings, engine=engine, events=RecordingEvents(), adapters=FakeAdapters(engine)
    )
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"
    with (
        live_server(app, settings=settings) as (_, port),
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
    ):
        sock.sendall(request)
        assert _read_response(sock).startswith(b"HTTP/1.1 200")
        time.sleep(6.0)  # longer than uvicorn's default keep-alive (5 s)
        sock.sendall(request)
        assert _read_response(sock).startswith(b"HTTP/1.1 200")


def _read_response(sock: Any) -> bytes:
    """One whole HTTP/1.1 response with a Content-Length body (b"" if the server closed)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(4096)
    return data


def test_uvicorn_leaves_forwarded_headers_to_the_app() -> None:
    """uvicorn's proxy_headers with forwarded_allow_ips=* believes the client-written leftmost
    X-Forwarded-For entry; the app's own middleware (serving.forwarded) reads it instead."""
    settings = make_settings(forwarded_allow_ips="*")
    config = uvicorn_config(settings, object(), "error")
    assert config.proxy_headers is False


def test_rotating_x_forwarded_for_behind_a_trusted_ingress_does_not_escape_limits() -> None:
    """With SERVING_FORWARDED_ALLOW_IPS=* (docs/deployment.md), a client that writes a fresh
    address into X-Forwarded-For on each request is still the address the ingress appended."""
    engine = FakeEngine()
    settings = make_settings(
        forwarded_allow_ips="*",
        web_sessions_per_minute=6,  # 3 new sessions at once per address
        web_address_chat_per_minute=4,  # 2 web chats at once per address
        rate_limit_burst_seconds=30,
    )
    app = create_app(
        settings, engine=engine, events=RecordingEvents(), adapters=FakeAdapters(engine)
    )
    rotating = (f"203.0.113.{i}, 198.51.100.7" for i in itertools.count(1))
    with live_server(app, settings=settings) as (_, port):
        origin = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=origin, timeout=10) as http:
            pages = [http.get("/", headers={"X-Forwarded-For": next(rotating)}) for _ in range(5)]
            assert [p.status_code for p in pages] == [200, 200, 200, 429, 429]
            chats = [
                http.post(
                    "/v1/chat/completions",
                    json=PAGE_CHAT,
                    headers=page_headers(
                        page.cookies["rlhf_session"],
                        origin=origin,
                        **{"X-Forwarded-For": next(rotating)},
                    ),
                ).status_code
                for page in pages[:3]
                for _ in range(2)
            ]
            assert sorted(chats) == [200, 200, 429, 429, 429, 429]
