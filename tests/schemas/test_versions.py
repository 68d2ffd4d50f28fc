"""schemas.versions: one parser, formatter and order for adapter versions."""

from __future__ import annotations

import pytest

from schemas.versions import AdapterVersion


def test_parse_format_and_store_dir() -> None:
    v = AdapterVersion.parse("policy@v17")
    assert (v.name, v.number, str(v)) == ("policy", 17, "policy@v17")
    assert str(v.next()) == "policy@v18"
    assert v.store_dir("s3://bucket/adapters/") == "s3://bucket/adapters/policy/v17"


def test_versions_order_by_number_not_text() -> None:
    versions = [AdapterVersion.parse(t) for t in ("policy@v10", "policy@v9", "policy@v2")]
    assert [str(v) for v in sorted(versions)] == ["policy@v2", "policy@v9", "policy@v10"]


@pytest.mark.parametrize("text", ["base", "policy", "policy@17", "policy@v", "../x@v1", "a b@v1"])
def test_anything_else_is_refused(text: str) -> None:
    assert not AdapterVersion.is_version(text)
    with pytest.raises(ValueError):
        AdapterVersion.parse(text)
