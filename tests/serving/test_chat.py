"""Chat completions through the official openai client (in-process ASGI transport).

Why one file (over 400 lines): every test drives the one chat handler through the same in-process
client; split, the fixtures would move to a conftest only these tests use.
"""

from __future__ import annotations

import random

import openai
import pytest

from schemas.events import PairServed, ResponseServed
from serving.engines.fake import FakeEngine, fake_words
from serving.settings import ServingSettings
from tests.support.serving import (
    ADMIN,
    API_KEY,
    HMAC_KEY,
    auth,
    harness,
    inner_pair_id,
    inner_response_id,
    make_settings,
)

pytestmark = pytest.mark.anyio
MODEL = "smollm2-135m-instruct"
HELLO = [{"role": "user", "content": "Say hello"}]


async def test_plain_completion_records_response_served() -> None:
    async with harness() as h:
        r = await h.openai().chat.completions.create(
            model=MODEL, messages=HELLO, seed=7, max_tokens=5, user="alice"
        )
        assert len(r.choices) == 1 and r.model_extra.get("pair_id") is None
        choice = r.choices[0]
        assert choice.model_extra["adapter_version"] == "base"
        words, truncated = fake_words(h.engine.requests[0].messages, "base", 0, 7, 1.0, 5)
        assert choice.message.content == " ".join(words)
        assert choice.finish_reason == ("length" if truncated else "stop")
        assert r.usage.completion_tokens == len(words)
        (event,) = h.events.events
        assert isinstance(event, ResponseServed)
        assert event.response.text == choice.message.content
        assert event.response.adapter_version == "base"
        assert event.sampling.seed == 7 and event.sampling.max_tokens == 5
        rid = inner_response_id(h, choice.model_extra["response_id"], "alice")
        assert event.response.response_id == rid
        # Pseudonymous: neither the API key nor the user name appears in the event.
        dumped = event.model_dump_json()
        assert "test-api-key" not in dumped and "alice" not in dumped


async def test_pair_returns_k_answers_in_shown_order(tmp_path) -> None:
    async with harness() as h:
        await h.engine.load_adapter("policy@v1", tmp_path)
        h.adapters.serving = "policy@v1"
        r = await h.openai().chat.completions.create(
            model=MODEL, messages=HELLO, extra_body={"pair": True, "k": 3}, user="bob"
        )
        assert len(r.choices) == 3
        pair_id = r.model_extra["pair_id"]
        (event,) = h.events.events
        assert isinstance(event, PairServed)
        assert event.pair_id == inner_pair_id(h, pair_id, "bob") and len(event.responses) == 3
        for api_index, canonical in enumerate(event.shown_order):
            choice = r.choices[api_index]
            served = event.responses[canonical]
            assert choice.index == api_index
            assert choice.message.content == served.text
            rid = inner_response_id(h, choice.model_extra["response_id"], "bob")
            assert served.response_id == rid
            assert choice.model_extra["adapter_version"] == served.adapter_version == "policy@v1"
        assert [req.n for req in h.engine.requests] == [3]


async def test_canary_pair_serves_both_versions(tmp_path) -> None:
    async with harness(make_settings(canary_share=1.0)) as h:
        for v in ("policy@v1", "policy@v2"):
            await h.engine.load_adapter(v, tmp_path)
        h.adapters.serving, h.adapters.canary = "policy@v1", "policy@v2"
        r = await h.openai().chat.completions.create(
            model=MODEL, messages=HELLO, extra_body={"pair": True}
        )
        versions = sorted(c.model_extra["adapter_version"] for c in r.choices)
        assert versions == ["policy@v1", "policy@v2"]
        (event,) = h.events.events
        assert [x.adapter_version for x in event.responses] == ["policy@v1", "policy@v2"]
        for api_index, canonical in enumerate(event.shown_order):
            expected = fake_words(
                event.messages, event.responses[canonical].adapter_version, 0, None, 1.0, 128
            )[0]
            assert r.choices[api_index].message.content == " ".join(expected)


async def test_unrequested_pair_share_pairs_plain_requests_but_never_streams() -> None:
    async with harness(make_settings(unrequested_pair_share=1.0)) as h:
        r = await h.openai().chat.completions.create(model=MODEL, messages=HELLO)
        assert len(r.choices) == 2 and r.model_extra["pair_id"]
        stream = await h.openai().chat.completions.create(model=MODEL, messages=HELLO, stream=True)
        indexes = {c.index async for chunk in stream for c in chunk.choices}
        assert indexes == {0}


async def test_streaming_single_and_pair_match_events() -> None:
    async with harness() as h:
        stream = await h.openai().chat.completions.create(
            model=MODEL,
            messages=HELLO,
            stream=True,
            extra_body={"pair": True},
            stream_options={"include_usage": True},
        )
        texts = {0: "", 1: ""}
        finishes = {}
        usage = None
        pair_ids = set()
        async for chunk in stream:
            pair_ids.add(chunk.model_extra.get("pair_id"))
            usage = chunk.usage or usage
            for c in chunk.choices:
                texts[c.index] += c.delta.content or ""
                if c.finish_reason:
                    finishes[c.index] = c.finish_reason
        assert len(pair_ids) == 1 and None not in pair_ids
        (event,) = h.events.events
        assert isinstance(event, PairServed)
        for api_index, canonical in enumerate(event.shown_order):
            assert texts[api_index] == event.responses[canonical].text
            assert finishes[api_index] == event.responses[canonical].finish_reason
        assert usage is not None
        assert usage.completion_tokens == sum(x.completion_tokens for x in event.responses)


@pytest.mark.parametrize("stream", [False, True])
async def test_request_racing_a_hot_swap_is_regenerated(tmp_path, stream: bool) -> None:
    async with harness() as h:
        for v in ("policy@v1", "policy@v2"):
            await h.engine.load_adapter(v, tmp_path)
        h.adapters.serving = "policy@v1"
        generate, generate_stream = h.engine.generate, h.engine.generate_stream

        async def swap_if_planned_on_v1(request) -> None:
            # The swap lands after the handler chose v1 but before the engine runs it.
            if request.adapter == "policy@v1":
                h.adapters.serving = "policy@v2"
                await h.engine.unload_adapter("policy@v1")

        async def swap_then_generate(request):
            await swap_if_planned_on_v1(request)
            return await generate(request)

        async def swap_then_stream(request):
            await swap_if_planned_on_v1(request)
            async for chunk in generate_stream(request):
                yield chunk

        h.engine.generate = swap_then_generate  # type: ignore[method-assign]
        h.engine.generate_stream = swap_then_stream  # type: ignore[method-assign]
        r = await h.openai().chat.completions.create(
            model=MODEL, messages=HELLO, stream=stream, extra_body={"pair": True}
        )
        if stream:
            adapters = {
                c.model_extra["adapter_version"] async for chunk in r for c in chunk.choices
            }
        else:
            adapters = {c.model_extra["adapter_version"] for c in r.choices}
        assert adapters == {"policy@v2"}
        (event,) = h.events.events
        assert {x.adapter_version for x in event.responses} == {"policy@v2"}


async def test_n_choices_each_logged() -> None:
    async with harness() as h:
        r = await h.openai().chat.completions.create(model=MODEL, messages=HELLO, n=3)
        assert [c.index for c in r.choices] == [0, 1, 2]
        served = h.events.of_kind("response.served")
        assert [e.response.text for e in served] == [c.message.content for c in r.choices]


async def test_pin_needs_admin_token(tmp_path) -> None:
    async with harness(make_settings(unrequested_pair_share=1.0)) as h:
        await h.engine.load_adapter("policy@v9", tmp_path)
        body = {"model": MODEL, "messages": HELLO, "adapter_version": "policy@v9"}
        refused = await h.http.post("/v1/chat/completions", json=body, headers=auth())
        assert refused.status_code == 403
        assert refused.json()["error"]["param"] == "adapter_version"
        ok = await h.http.post(
            "/v1/chat/completions", json=body, headers={**auth(), "X-Admin-Token": ADMIN}
        )
        assert ok.status_code == 200
        assert ok.json()["choices"][0]["adapter_version"] == "policy@v9"
        assert ok.json()["pair_id"] is None  # evaluation traffic is never paired implicitly
        assert h.engine.requests[-1].adapter == "policy@v9"


async def _error(h, body, headers=None):
    r = await h.http.post(
        "/v1/chat/completions", json=body, headers=auth() if headers is None else headers
    )
    return r.status_code, r.json()["error"]


@pytest.mark.parametrize(
    ("patch", "status", "param"),
    [
        ({"max_tokens": 10_000}, 400, "max_tokens"),
        ({"n": 99}, 400, "n"),
        ({"pair": True, "k": 9}, 400, "k"),
        ({"pair": True, "n": 2}, 400, "n"),
        ({"messages": HELLO * 70}, 400, "messages"),
        ({"messages": []}, 400, "messages"),
        ({"temperature": 5}, 400, "temperature"),
        ({"model": "gpt-4"}, 404, "model"),
        ({"messages": [{"role": "tool", "content": "x"}]}, 400, "messages.0.role"),
        ({"stop": [f"s{i}" for i in range(5)]}, 400, "stop"),
        ({"stop": [f"s{i}" for i in range(12_000)]}, 400, "stop"),
        ({"stop": "x" * 65}, 400, "stop"),
        ({"stop": ["ok", "y" * 65]}, 400, "stop"),
        ({"logprobs": True}, 400, "logprobs"),
        ({"top_logprobs": 3}, 400, "top_logprobs"),
        ({"response_format": {"type": "json_object"}}, 400, "response_format"),
        ({"response_format": {}}, 400, "response_format.type"),
        ({"response_format": {"json_schema": {"name": "x"}}}, 400, "response_format.type"),
        ({"parallel_tool_calls": False}, 400, "parallel_tool_calls"),
        ({"parallel_tool_calls": True}, 400, "parallel_tool_calls"),
        ({"reasoning_effort": "high"}, 400, "reasoning_effort"),
        ({"modalities": ["text", "audio"]}, 400, "modalities"),
        ({"seed": 2**80}, 400, "seed"),
        ({"seed": 2**53}, 400, "seed"),
        ({"seed": -(2**53)}, 400, "seed"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, 400, "tools"),
        ({"tool_choice": "auto"}, 400, "tool_choice"),
        ({"presence_penalty": 0.5}, 400, "presence_penalty"),
        ({"logit_bias": {"50256": -100}}, 400, "logit_bias"),
        ({"model": "gpt-4:policy@v1"}, 404, "model"),
        ({"model": f"{MODEL}:policy@v1", "adapter_version": "policy@v2"}, 400, "model"),
    ],
)
async def test_limits_and_validation_use_openai_error_shape(patch, status, param) -> None:
    async with harness() as h:
        code, error = await _error(h, {"model": MODEL, "messages": HELLO, **patch})
        assert code == status, error
        assert error["param"] == param
        assert set(error) == {"message", "type", "param", "code"}
        assert error["message"] and "Traceback" not in error["message"]
        assert not h.events.events


async def test_stop_sequences_up_to_the_caps_are_accepted() -> None:
    async with harness() as h:
        stop = ["x" * 64, "\n\n", "User:", "###"]
        r = await h.http.post(
            "/v1/chat/completions", json={"messages": HELLO, "stop": stop}, headers=auth()
        )
        assert r.status_code == 200, r.text
        assert h.events.of_kind("response.served")[-1].sampling.stop == stop


async def test_openai_client_sees_typed_errors() -> None:
    async with harness() as h:
        with pytest.raises(openai.AuthenticationError):
            await h.openai(api_key="wrong").chat.completions.create(model=MODEL, messages=HELLO)
        with pytest.raises(openai.BadRequestError) as bad:
            await h.openai().chat.completions.create(
                model=MODEL, messages=HELLO, max_tokens=100_000
            )
        assert "max_tokens" in str(bad.value)


async def test_request_body_cap() -> None:
    async with harness(make_settings(max_request_bytes=2048)) as h:
        big = [{"role": "user", "content": "x" * 4000}]
        code, error = await _error(h, {"model": MODEL, "messages": big})
        assert code == 413 and error["code"] == "request_too_large"

        # Without Content-Length (chunked upload) the cap is enforced while reading.
        async def chunks():
            for _ in range(5):
                yield b" " * 1000

        r = await h.http.post("/v1/chat/completions", content=chunks(), headers=auth())
        assert r.status_code == 413


async def test_overload_is_503_and_internal_errors_are_generic(caplog) -> None:
    engine = FakeEngine(max_queue=0)
    async with harness(engine=engine) as h:
        code, error = await _error(h, {"model": MODEL, "messages": HELLO})
        assert code == 503 and error["code"] == "engine_overloaded"

        async def boom(request):
            raise RuntimeError("secret internal detail")

        engine.max_queue = 10
        engine.generate = boom  # type: ignore[method-assign]
        r = await h.http.post(
            "/v1/chat/completions", json={"model": MODEL, "messages": HELLO}, headers=auth()
        )
        assert r.status_code == 500
        assert r.json()["error"]["message"] == "internal server error"
        assert "secret" not in r.text and "Traceback" not in r.text
        assert any("secret internal detail" in str(rec.exc_info) for rec in caplog.records)


async def test_auth_off_accepts_any_caller() -> None:
    async with harness(make_settings(api_keys=[])) as h:
        r = await h.http.post("/v1/chat/completions", json={"model": MODEL, "messages": HELLO})
        assert r.status_code == 200


async def test_models_list() -> None:
    async with harness() as h:
        models = await h.openai().models.list()
        ids = [m.id for m in models.data]
        assert ids[0] == MODEL
        unauth = await h.http.get("/v1/models")
        assert unauth.status_code == 401


async def test_neutral_values_of_unsupported_parameters_are_accepted() -> None:
    async with harness() as h:
        neutral = {
            "logprobs": False,
            "response_format": {"type": "text"},
            "tools": [],
            "tool_choice": "none",
            "frequency_penalty": 0,
            "presence_penalty": 0.0,
            "logit_bias": {},
        }
        body = {"model": MODEL, "messages": HELLO, **neutral}
        r = await h.http.post("/v1/chat/completions", json=body, headers=auth())
        assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "body",
    [
        b'{"messages": [{"role": "user", "content": "hi \\ud800"}]}',
        b'{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\udfff"}]}]}',
        b'{"messages": [{"role": "user", "content": "hi"}], "stop": ["\\ud800"]}',
        b'{"messages": [{"role": "user", "content": "hi"}], "user": "\\ud800"}',
        # Ignored fields and keys too: the README promises a 400 for any string.
        b'{"messages": [{"role": "user", "content": "hi"}], "unknown": "\\ud800"}',
        b'{"messages": [{"role": "user", "content": "hi"}], "x": {"y": ["\\udfff"]}}',
        b'{"messages": [{"role": "user", "content": "hi"}], "\\ud800": 1}',
        b'{"messages": [{"role": "user", "content": "hi", "name": "\\ud800"}]}',
    ],
)
async def test_lone_surrogate_is_a_400_not_a_500(body: bytes) -> None:
    async with harness() as h:
        r = await h.http.post(
            "/v1/chat/completions",
            content=body,
            headers={**auth(), "Content-Type": "application/json"},
        )
        assert r.status_code == 400, r.text
        assert "surrogate" in r.json()["error"]["message"]
        assert not h.events.events


@pytest.mark.parametrize("field", ["temperature", "top_p", "presence_penalty"])
@pytest.mark.parametrize("value", [b"NaN", b"Infinity", b"-Infinity"])
async def test_non_finite_numbers_are_named_as_such(field: str, value: bytes) -> None:
    async with harness() as h:
        body = b'{"messages": [{"role": "user", "content": "hi"}], "%s": %s}' % (
            field.encode(),
            value,
        )
        r = await h.http.post(
            "/v1/chat/completions",
            content=body,
            headers={**auth(), "Content-Type": "application/json"},
        )
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == field and "finite" in error["message"], error


async def test_the_largest_json_safe_seeds_are_accepted() -> None:
    async with harness() as h:
        for seed in (2**53 - 1, -(2**53 - 1), 0):
            body = {"messages": HELLO, "seed": seed}
            r = await h.http.post("/v1/chat/completions", json=body, headers=auth())
            assert r.status_code == 200, r.text


async def test_feedback_lone_surrogate_is_a_400() -> None:
    async with harness() as h:
        r = await h.http.post(
            "/v1/feedback",
            content=b'{"response_id": "a.b.1.c", "correction": "\\ud800"}',
            headers={**auth(), "Content-Type": "application/json"},
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "correction"


async def test_listed_adapter_ids_are_admin_pins(tmp_path) -> None:
    async with harness() as h:
        await h.engine.load_adapter("policy@v2", tmp_path)
        ids = [m.id for m in (await h.openai().models.list()).data]
        listed = f"{MODEL}:policy@v2"
        assert listed in ids
        body = {"model": listed, "messages": HELLO}
        refused = await h.http.post("/v1/chat/completions", json=body, headers=auth())
        assert refused.status_code == 403 and refused.json()["error"]["param"] == "model"
        ok = await h.http.post(
            "/v1/chat/completions", json=body, headers={**auth(), "X-Admin-Token": ADMIN}
        )
        assert ok.status_code == 200, ok.text
        assert ok.json()["choices"][0]["adapter_version"] == "policy@v2"
        assert h.engine.requests[-1].adapter == "policy@v2"


async def test_identical_pair_answers_are_not_logged_as_a_comparison() -> None:
    async with harness() as h:
        # Temperature 0 on one version: both answers are the same text.
        r = await h.http.post(
            "/v1/chat/completions",
            json={"messages": HELLO, "pair": True, "temperature": 0},
            headers=auth(),
        )
        body = r.json()
        texts = {c["message"]["content"] for c in body["choices"]}
        assert r.status_code == 200 and len(body["choices"]) == 2 and len(texts) == 1
        assert body["pair_id"] is None
        assert [type(e) for e in h.events.events] == [ResponseServed, ResponseServed]
        # At temperature 1 the answers differ and the pair is a comparison.
        r = await h.http.post(
            "/v1/chat/completions", json={"messages": HELLO, "pair": True}, headers=auth()
        )
        assert r.json()["pair_id"] and isinstance(h.events.events[-1], PairServed)


async def test_identical_streamed_pair_is_logged_as_plain_answers() -> None:
    async with harness() as h:
        stream = await h.openai().chat.completions.create(
            model=MODEL, messages=HELLO, stream=True, temperature=0, extra_body={"pair": True}
        )
        texts: dict[int, str] = {}
        async for chunk in stream:
            for c in chunk.choices:
                texts[c.index] = texts.get(c.index, "") + (c.delta.content or "")
        assert len(texts) == 2 and len(set(texts.values())) == 1
        assert [type(e) for e in h.events.events] == [ResponseServed, ResponseServed]


async def test_by_default_a_plain_request_gets_what_it_asked_for() -> None:
    # The shipped default unrequested_pair_share, not the harness's explicit 0.
    settings = ServingSettings(
        engine="fake", kafka_enabled=False, api_keys=[API_KEY], admin_token=ADMIN, hmac_key=HMAC_KEY
    )
    async with harness(settings) as h:
        r = await h.openai().chat.completions.create(model=MODEL, messages=HELLO)
        assert len(r.choices) == 1 and r.model_extra.get("pair_id") is None
        assert r.usage.completion_tokens == len(r.choices[0].message.content.split())


async def test_canary_share_splits_only_that_share_of_pairs(tmp_path, monkeypatch) -> None:
    # The split draws from the random module: seeded, so the 200 draws are the same every run
    # (unseeded, about 1 run in 2,500 fell outside the bounds below).
    monkeypatch.setattr(random, "random", random.Random(0).random)
    async with harness(make_settings(canary_share=0.25)) as h:
        for v in ("policy@v1", "policy@v2"):
            await h.engine.load_adapter(v, tmp_path)
        h.adapters.serving, h.adapters.canary = "policy@v1", "policy@v2"
        mixed = 0
        for _ in range(200):
            r = await h.http.post(
                "/v1/chat/completions", json={"messages": HELLO, "pair": True}, headers=auth()
            )
            mixed += len({c["adapter_version"] for c in r.json()["choices"]}) == 2
        assert 30 <= mixed <= 75  # 50 expected
