"""Simulated users whose feedback is fully predictable, for tests that count what arrives."""

from __future__ import annotations

from loop.preferences import NoiseConfig
from loop.sim import SimConfig


def every_feedback_config(
    base_url: str, api_key: str, *, comparisons: int, concurrency: int, seed: int
) -> SimConfig:
    """Users who never flip a vote (no noise) and also rate and correct every answer they see."""
    return SimConfig(
        base_url=base_url,
        api_key=api_key,
        comparisons=comparisons,
        concurrency=concurrency,
        noise=NoiseConfig(0.0),
        thumbs_rate=1.0,
        correction_rate=1.0,
        seed=seed,
    )
