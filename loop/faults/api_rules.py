"""Requests that break an API rule a client could get wrong by mistake or on purpose, one
:class:`FaultRow` each against a real ``serve`` process: an ``Idempotency-Key`` reused for another
vote, an erasure naming an API key that does not exist, and OpenAI parameters with no meaning
here (malformed, non-finite, out of range, or silently unsupported). Each must be refused with a
4xx that names what is wrong, and the replica must answer normally afterwards.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from loop.faults.replica import Replica, input_row
from loop.faults.rows import FaultRow

Check = Callable[[], tuple[bool, str]]


def _error(resp: httpx.Response) -> str:
    try:
        error = resp.json()["error"]
    except (ValueError, KeyError, TypeError):
        return resp.text[:80]
    return f"{error.get('code')} ({error.get('param')}): {str(error.get('message'))[:70]}"


def _reused_key(replica: Replica) -> Check:
    def check() -> tuple[bool, str]:
        pair = replica.chat("Two answers, please.", pair=True, temperature=1.0).json()["pair_id"]
        headers = replica.auth | {"Idempotency-Key": "probe-key-1"}
        statuses = []
        for choice in ("b", "b", "a"):
            vote = {"pair_id": pair, "choice": choice}
            statuses.append(replica.http.post("/v1/feedback", json=vote, headers=headers))
        codes = [r.status_code for r in statuses]
        return codes == [200, 200, 409], f"b, b, a under one key: {codes}; {_error(statuses[-1])}"

    return check


def _erase_unknown_key(replica: Replica) -> Check:
    def check() -> tuple[bool, str]:
        body = {"user": "alice", "api_key": "typo"}
        resp = replica.admin_post("/admin/users/erase", body)
        return resp.status_code == 404, f"{resp.status_code}: {_error(resp)}"

    return check


def _raw_chat(replica: Replica, raw: bytes, status: int, needle: str) -> Check:
    def check() -> tuple[bool, str]:
        resp = replica.http.post(
            "/v1/chat/completions",
            content=raw,
            headers=replica.auth | {"Content-Type": "application/json"},
        )
        text = _error(resp)
        return resp.status_code == status and needle in text, f"{resp.status_code}: {text}"

    return check


def _chat(replica: Replica, status: int, param: str, **extra: object) -> Check:
    def check() -> tuple[bool, str]:
        resp = replica.chat("hi", **extra)
        text = _error(resp)
        return resp.status_code == status and f"({param})" in text, f"{resp.status_code}: {text}"

    return check


def api_rule_rows(replica: Replica) -> list[FaultRow]:
    hi = b'"max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]'
    return [
        input_row("Idempotency-Key reused for another vote", "b, b, then a with one key",
                  _reused_key(replica), replica),
        input_row("erase by name with an unknown API key",
                  'POST /admin/users/erase {"user": "alice", "api_key": "typo"}',
                  _erase_unknown_key(replica), replica),
        input_row("lone surrogate in an unknown field", 'an ignored field "x": "\\ud800"',
                  _raw_chat(replica, b'{%s, "x": "\\ud800"}' % hi, 400, "surrogate"), replica),
        input_row("NaN temperature", "temperature NaN (a JSON extension Python accepts)",
                  _raw_chat(replica, b'{%s, "temperature": NaN}' % hi, 400, "finite"), replica),
        input_row("response_format without type", "response_format {}",
                  _chat(replica, 400, "response_format.type", response_format={}), replica),
        input_row("parallel_tool_calls", "parallel_tool_calls true (no tools are served)",
                  _chat(replica, 400, "parallel_tool_calls", parallel_tool_calls=True), replica),
        input_row("seed above 2^53", "seed 2^80",
                  _chat(replica, 400, "seed", seed=2**80), replica),
    ]  # fmt: skip
