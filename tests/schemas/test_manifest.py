from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas import AdapterManifest, OffsetRange


def _manifest(**overrides) -> AdapterManifest:
    fields = dict(
        model_name="policy",
        version="policy@v12",
        parent_version="policy@v11",
        base_model="SmolLM2-135M-Instruct",
        base_model_sha256="b" * 64,
        reward_model_version="reward@v4",
        offsets=[OffsetRange(topic="rlhf.feedback", partition=0, start=10, end=90)],
        event_count=80,
        metrics={"objective/kl": 0.04},
        config={"lr": 1e-5},
        code_revision="abc123",
        files={"adapter_model.safetensors": "c" * 64},
    )
    fields.update(overrides)
    return AdapterManifest(**fields)


def test_manifest_round_trips_and_exposes_number():
    manifest = _manifest()
    again = AdapterManifest.model_validate_json(manifest.model_dump_json())
    assert again == manifest
    assert again.number == 12


@pytest.mark.parametrize(
    "overrides",
    [
        {"version": "policy-12"},
        {"base_model_sha256": "xyz"},
        {"files": {}},
        {"files": {"a": "not-a-digest"}},
        {"kind": "value"},
        {"surprise": True},
    ],
)
def test_manifest_rejects_bad_values(overrides):
    with pytest.raises(ValidationError):
        _manifest(**overrides)


def test_offset_range_must_be_ordered():
    with pytest.raises(ValidationError):
        OffsetRange(topic="t", partition=0, start=5, end=4)
