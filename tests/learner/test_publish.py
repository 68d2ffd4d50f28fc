"""Adapter store: atomic publish (local rename; object store manifest-last), verify, ranges."""

from __future__ import annotations

import uuid
from pathlib import Path

import fsspec
import pytest

from learner import crash_points
from learner.publish import AdapterStore, VersionExistsError, build_manifest
from learner.publish.manifest import code_revision, offset_ranges
from learner.store.records import PartitionPosition, Snapshot
from learner.trainers import write_fake_adapter
from schemas.manifest import PROMOTED_FILENAME, AdapterManifest, OffsetRange, PromotedRecord


class Crash(Exception):
    pass


def manifest_for(adapter: Path, number: int, name: str = "policy") -> AdapterManifest:
    return build_manifest(
        adapter_dir=adapter,
        model_name="m",
        version=f"{name}@v{number}",
        parent_version=None,
        base_model="tiny",
        base_model_sha256="0" * 64,
        reward_model_version="reward@v1",
        offsets=[OffsetRange(topic="t", partition=0, start=0, end=3)],
        event_count=3,
        metrics={"eval/kl": 0.1},
        config={"cycle_id": number},
    )


@pytest.fixture
def adapter(tmp_path: Path) -> Path:
    return write_fake_adapter(tmp_path / "adapter", seed=1)


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> AdapterStore:
    if request.param == "local":
        return AdapterStore(str(tmp_path / "adapters"), "policy")
    return AdapterStore(f"memory://adapters-{uuid.uuid4().hex}", "policy")


def test_publish_makes_a_complete_verified_version(store: AdapterStore, adapter: Path) -> None:
    assert store.versions() == [] and store.latest() is None
    uri, sha = store.publish(adapter, manifest_for(adapter, 1))
    assert store.versions() == [1]
    assert store.verify(1) == []
    assert set(store.manifest(1).files) == {"adapter_config.json", "adapter_model.safetensors"}
    fs, path = fsspec.core.url_to_fs(uri)
    import hashlib

    assert hashlib.sha256(fs.cat_file(f"{path}/manifest.json")).hexdigest() == sha
    assert not [e for e in store.fs.ls(store.family, detail=False) if ".tmp-" in e]


def test_versions_are_immutable(store: AdapterStore, adapter: Path) -> None:
    store.publish(adapter, manifest_for(adapter, 1))
    with pytest.raises(VersionExistsError):
        store.publish(adapter, manifest_for(adapter, 1))


def test_crash_before_manifest_leaves_nothing_visible(
    store: AdapterStore, adapter: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(point: str) -> None:
        if point == "publish.after_files":
            raise Crash(point)

    monkeypatch.setattr(crash_points, "crash_point", crash)
    with pytest.raises(Crash):
        store.publish(adapter, manifest_for(adapter, 1))
    assert store.versions() == [] and store.latest() is None
    if store.local:
        assert store.cleanup_temp() == 1
        assert store.fs.ls(store.family, detail=False) == []
    monkeypatch.setattr(crash_points, "crash_point", lambda point: None)
    store.publish(adapter, manifest_for(adapter, 1))  # the retry takes the same number
    assert store.versions() == [1] and store.verify(1) == []


def test_verify_reports_a_tampered_file(store: AdapterStore, adapter: Path) -> None:
    store.publish(adapter, manifest_for(adapter, 1))
    store.fs.pipe_file(f"{store.version_dir(1)}/adapter_model.safetensors", b"garbage")
    assert store.verify(1) == ["adapter_model.safetensors: sha256 mismatch"]


def test_download_round_trips(store: AdapterStore, adapter: Path, tmp_path: Path) -> None:
    store.publish(adapter, manifest_for(adapter, 1))
    out = store.download(1, tmp_path / "copy")
    assert (out / "adapter_model.safetensors").read_bytes() == (
        adapter / "adapter_model.safetensors"
    ).read_bytes()


def test_offset_ranges_continue_from_the_previous_version() -> None:
    def snap(nxt: int, epoch: int = 0, start: int = 0) -> Snapshot:
        return Snapshot(10, (PartitionPosition("t", 0, nxt, epoch, start),))

    first = offset_ranges(None, snap(5))
    assert [(r.start, r.end) for r in first] == [(0, 5)]
    second = offset_ranges(snap(5).to_json(), snap(9))
    assert [(r.start, r.end) for r in second] == [(5, 9)]
    # The broker lost its data (new epoch starting at 0): the range restarts there.
    after_reset = offset_ranges(snap(9).to_json(), snap(3, epoch=1, start=0))
    assert [(r.start, r.end) for r in after_reset] == [(0, 3)]


def test_code_revision_is_a_git_sha_or_package_version() -> None:
    rev = code_revision()
    assert len(rev) == 40 or rev.startswith("rlhf-service==")


def test_promoted_record_is_replaced_whole(store: AdapterStore, adapter: Path) -> None:
    uri, sha = store.publish(adapter, manifest_for(adapter, 1))
    for version in ("policy@v1", "policy@v2"):
        store.record_promoted(
            PromotedRecord(model_name="m", version=version, uri=uri, manifest_sha256=sha)
        )
    raw = store.fs.cat_file(f"{store.family}/{PROMOTED_FILENAME}")
    assert PromotedRecord.model_validate_json(raw).version == "policy@v2"
    assert store.versions() == [1]  # the record is not a version
    leftovers = [e for e in store.fs.ls(store.family, detail=False) if ".tmp-" in e]
    assert leftovers == []
