"""The OpenAPI document matches the server: schemathesis (real HTTP, a real uvicorn) generates
valid and invalid requests from the document and checks every answer with all its checks (no
5xx, valid data accepted, invalid data refused with a 4xx, statuses, content types and bodies as
documented)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from serving.app import create_app
from serving.openapi import SIGNED_ID_PATTERN
from tests.serving.conftest import ADMIN, API_KEY, harness, make_settings
from tests.serving.live import live_server

ST = Path(sys.executable).parent / "st"


def _schemathesis(port: int, token: str, paths: str, examples: int, cwd: Path) -> str:
    run = subprocess.run(
        [
            str(ST), "run", f"http://127.0.0.1:{port}/openapi.json",
            "--checks", "all", "--workers", "1", "--max-examples", str(examples),
            "--include-path-regex", paths, "--continue-on-failure", "--seed", "1",
            "-H", f"Authorization: Bearer {token}",
        ],
        cwd=cwd, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    return run.stdout


def _cases(report: str) -> tuple[int, int]:
    found = re.search(r"(\d+) generated, (\d+) passed", report)
    assert found, report[-3000:]
    return int(found.group(1)), int(found.group(2))


def test_schema_matches_server_for_over_a_thousand_cases(tmp_path: Path) -> None:
    app = create_app(make_settings())
    with live_server(app) as (_, port):
        api = _cases(_schemathesis(port, API_KEY, "^/(v1|healthz|readyz|metrics)", 150, tmp_path))
        admin = _cases(_schemathesis(port, ADMIN, "^/admin", 60, tmp_path))
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
