"""Slow tier: the real SmolLM2-135M-Instruct through the transformers engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.events import ChatMessage
from serving.engines.protocol import GenerationRequest
from serving.engines.transformers_engine import TransformersEngine

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


async def test_smollm2_answers_two_plus_two(embedded_model_dir: Path) -> None:
    engine = TransformersEngine(embedded_model_dir, max_batch_size=4)
    await engine.start()
    try:
        request = GenerationRequest(
            messages=[ChatMessage(role="user", content="What is 2+2?")],
            max_tokens=32,
            temperature=0.0,
            n=1,
        )
        answer = (await engine.generate(request))[0]
    finally:
        await engine.stop()
    assert "4" in answer.text, answer.text
