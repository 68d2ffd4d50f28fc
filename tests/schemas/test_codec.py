from __future__ import annotations

import json

import pytest

from schemas import SCHEMA_VERSION, decode_event, encode_event
from tests.events import pair_served


def _raw_pair() -> dict:
    return json.loads(encode_event(pair_served()))


@pytest.mark.parametrize(
    ("raw", "label"),
    [
        (b"{not json", "malformed_json"),
        (b"\xff\xfe", "malformed_json"),
        (b"[1, 2]", "malformed_json"),
        (None, "malformed_json"),
        (b'{"kind": "pair.served"}', "unsupported_version"),
        (
            json.dumps({"schema_version": SCHEMA_VERSION + 1, "kind": "pair.served"}),
            "unsupported_version",
        ),
        (json.dumps({"schema_version": 0, "kind": "pair.served"}), "unsupported_version"),
        (json.dumps({"schema_version": "1", "kind": "pair.served"}), "unsupported_version"),
        (json.dumps({"schema_version": SCHEMA_VERSION, "kind": "telemetry"}), "unknown_kind"),
    ],
)
def test_bad_messages_are_labelled_not_raised(raw, label):
    result = decode_event(raw)
    assert not result.ok
    assert result.error is not None and result.error.label == label


def test_unknown_fields_are_tolerated_and_reported_at_any_depth():
    data = _raw_pair()
    data["added_in_v2"] = {"x": 1}
    data["responses"][1]["logprobs"] = [0.1]
    data["sampling"]["min_p"] = 0.05
    result = decode_event(json.dumps(data))
    assert result.event is not None, result.error
    assert sorted(result.unknown_fields) == [
        "added_in_v2",
        "responses.1.logprobs",
        "sampling.min_p",
    ]
    assert result.event == pair_served().model_copy(
        update={"event_id": data["event_id"], "ts": result.event.ts}
    )


def test_invalid_known_field_is_an_error_even_with_unknown_fields():
    data = _raw_pair()
    data["extra"] = 1
    data["shown_order"] = [0, 0]
    result = decode_event(json.dumps(data))
    assert not result.ok
    assert result.error is not None and result.error.label == "invalid"


def test_missing_required_field_is_invalid():
    data = _raw_pair()
    del data["pair_id"]
    result = decode_event(json.dumps(data))
    assert result.error is not None and result.error.label == "invalid"
    assert "pair_id" in result.error
