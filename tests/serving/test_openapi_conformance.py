"""The OpenAPI document matches the server: schemathesis (real HTTP, a real uvicorn) generates
valid and invalid requests from the document and checks every answer with all its checks (no
5xx, valid data accepted, invalid data refused with a 4xx, statuses, content types and bodies as
documented)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loop.faults.conformance import run_schemathesis
from serving.app import create_app
from serving.openapi import SIGNED_ID_PATTERN
from tests.serving.live import live_server
from tests.support.serving import ADMIN, API_KEY, harness, make_settings


def _cases(port: int, token: str, paths: str, examples: int, cwd: Path) -> tuple[int, int]:
    generated, passed, report = run_schemathesis(
        f"http://127.0.0.1:{port}", token, paths, examples, cwd
    )
    assert generated, report
    return generated, passed


def test_schema_matches_server_for_over_a_thousand_cases(tmp_path: Path) -> None:
    app = create_app(make_settings())
    with live_server(app) as (_, port):
        api = _cases(port, API_KEY, "^/(v1|healthz|readyz|metrics)", 150, tmp_path)
        admin = _cases(port, ADMIN, "^/admin", 60, tmp_path)
    generated = api[0] + admin[0]
    assert generated >= 1000
    assert api[0] == api[1] and admin[0] == admin[1]


@pytest.mark.anyio
async def test_document_says_400_and_the_caps() -> None:
    settings = make_settings(max_n=3, max_k=5, max_messages=7)
    async with harness(settings) as h:
        schema = (await h.http.get("/openapi.json")).json()
    chat = schema["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert "422" not in chat and "400" in chat
    props = schema["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert props["n"]["maximum"] == 3 and props["k"]["maximum"] == 5
    assert props["messages"]["maxItems"] == 7
    feedback = schema["components"]["schemas"]["FeedbackRequest"]
    assert len(feedback["oneOf"]) == 4
    ids = feedback["properties"]["pair_id"]["anyOf"][0]
    assert ids["pattern"] == SIGNED_ID_PATTERN
