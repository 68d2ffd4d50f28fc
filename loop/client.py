"""The service's public HTTP API as a chat app sees it: the official ``openai`` client for chat,
plain HTTP (httpx) for ``POST /v1/feedback`` and the admin routes.

The project's extensions travel as the API contract says (docs/architecture.md, "HTTP API"): request
fields ``pair``, ``k``, ``adapter_version`` in ``extra_body``; the version pin needs the admin token
in the ``X-Admin-Token`` header; responses carry ``pair_id`` at top level and ``response_id`` /
``adapter_version`` per choice as extra fields.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from openai import AsyncOpenAI

logger = logging.getLogger(__name__)

RETRY_STATUSES = (429, 502, 503, 504)


def api_root(base_url: str) -> str:
    """Server root without a trailing ``/v1`` (both spellings are accepted on the CLI)."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


@dataclass(frozen=True)
class Answer:
    text: str
    response_id: str | None
    adapter_version: str | None
    finish_reason: str | None


@dataclass(frozen=True)
class ChatResult:
    # The signed pair id the server sent (``pair_id`` in the response), None for plain answers.
    pair_token: str | None
    answers: list[Answer]
    completion_tokens: int | None


class ServiceClient:
    """One connection pool to a serving replica (chat, feedback, admin)."""

    def __init__(
        self,
        base_url: str,
        api_key: str = "none",
        admin_token: str | None = None,
        timeout: float = 300.0,
        max_retries: int = 3,
    ) -> None:
        self.root = api_root(base_url)
        self.api_key = api_key
        self.admin_token = admin_token
        self.max_retries = max_retries
        self.openai = AsyncOpenAI(
            base_url=self.root + "/v1", api_key=api_key, timeout=timeout, max_retries=max_retries
        )
        self.http = httpx.AsyncClient(
            base_url=self.root, timeout=timeout, headers={"Authorization": f"Bearer {api_key}"}
        )

    async def aclose(self) -> None:
        await self.openai.close()
        await self.http.aclose()

    async def chat(
        self,
        prompt: str,
        *,
        model: str,
        user: str | None = None,
        pair: bool = False,
        k: int = 2,
        max_tokens: int | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        adapter_version: str | None = None,
    ) -> ChatResult:
        extra_body: dict[str, Any] = {}
        extra_headers: dict[str, str] = {}
        if pair:
            extra_body["pair"] = True
            if k != 2:
                extra_body["k"] = k
        if adapter_version is not None:
            if not self.admin_token:
                raise ValueError("pinning adapter_version needs the admin token")
            extra_body["adapter_version"] = adapter_version
            extra_headers["X-Admin-Token"] = self.admin_token
        kwargs: dict[str, Any] = {}
        if user is not None:
            kwargs["user"] = user
        if max_tokens is not None:
            kwargs["max_tokens"] = max_tokens
        if temperature is not None:
            kwargs["temperature"] = temperature
        if seed is not None:
            kwargs["seed"] = seed
        resp = await self.openai.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": prompt}],
            extra_body=extra_body or None,
            extra_headers=extra_headers or None,
            **kwargs,
        )
        answers = []
        for choice in sorted(resp.choices, key=lambda c: c.index):
            extra = choice.model_extra or {}
            answers.append(
                Answer(
                    choice.message.content or "",
                    extra.get("response_id"),
                    extra.get("adapter_version"),
                    choice.finish_reason,
                )
            )
        tokens = resp.usage.completion_tokens if resp.usage is not None else None
        return ChatResult((resp.model_extra or {}).get("pair_id"), answers, tokens)

    async def feedback(self, body: dict[str, Any]) -> httpx.Response:
        """POST /v1/feedback, retrying overload/unavailable answers with backoff.

        Every retry carries the same ``Idempotency-Key``, so a request that reached the server
        before its answer was lost is one event, not two (a correction would be stored twice).
        """
        delay = 0.5
        key = {"Idempotency-Key": uuid.uuid4().hex}
        for attempt in range(self.max_retries + 1):
            try:
                resp = await self.http.post("/v1/feedback", json=body, headers=key)
            except httpx.TransportError:
                if attempt == self.max_retries:
                    raise
            else:
                if resp.status_code not in RETRY_STATUSES or attempt == self.max_retries:
                    return resp
            await asyncio.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    async def admin_get(self, path: str) -> Any:
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        resp = await self.http.get(path, headers=headers)
        resp.raise_for_status()
        return resp.json()

    async def model_id(self) -> str:
        """The first model id /v1/models lists (what the chat requests name)."""
        models = await self.openai.models.list()
        return models.data[0].id
