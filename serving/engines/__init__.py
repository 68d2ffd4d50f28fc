"""Generation engines behind one small protocol (``serving.engines.protocol.Engine``).

``create_engine(settings)`` picks one by ``settings.engine``; each engine module is imported only
when chosen, so the HTTP layer and its tests never import torch or vLLM unless asked to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from serving.engines.protocol import Engine
    from serving.settings import ServingSettings


def create_engine(settings: ServingSettings) -> Engine:
    if settings.engine == "transformers":
        from serving.engines.transformers_engine import TransformersEngine

        return TransformersEngine.from_settings(settings)
    if settings.engine == "vllm":
        from serving.engines.vllm_engine import VLLMEngine

        return VLLMEngine.from_settings(settings)
    if settings.engine == "fake":
        from serving.engines.fake import FakeEngine

        return FakeEngine(token_delay=settings.fake_token_delay_seconds)
    raise ValueError(f"unknown engine {settings.engine!r}")
