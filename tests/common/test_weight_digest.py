from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from common import weight_digest
from common.weight_digest import CACHE_FILENAME, file_sha256, model_dir_sha256


def full_read_digest(model_dir: Path) -> str:
    """The fingerprint as it was always computed: every weight file read in full."""
    digest = hashlib.sha256()
    for weights in sorted(model_dir.glob("*.safetensors")):
        digest.update(weights.name.encode())
        digest.update(hashlib.sha256(weights.read_bytes()).hexdigest().encode())
    return digest.hexdigest()


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """Two small weight shards (content is never parsed: only hashed)."""
    path = tmp_path / "model"
    path.mkdir()
    (path / "model-00001-of-00002.safetensors").write_bytes(b"first shard" * 100)
    (path / "model-00002-of-00002.safetensors").write_bytes(b"second shard" * 100)
    (path / "config.json").write_text("{}")
    return path


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The weight files read in full, in order."""
    calls: list[Path] = []

    def counting(path: Path, chunk: int = 1 << 20) -> str:
        calls.append(Path(path))
        return file_sha256(path, chunk)

    monkeypatch.setattr(weight_digest, "file_sha256", counting)
    return calls


def test_same_digest_as_a_full_read(model_dir: Path, tmp_path: Path, tiny_model_dir: Path):
    cache = tmp_path / "cache"
    assert model_dir_sha256(model_dir, cache) == full_read_digest(model_dir)
    assert model_dir_sha256(tiny_model_dir, cache) == full_read_digest(tiny_model_dir)
    # and from the cache, too
    assert model_dir_sha256(model_dir, cache) == full_read_digest(model_dir)


def test_second_call_reads_no_weight_bytes(model_dir: Path, tmp_path: Path, reads: list[Path]):
    cache = tmp_path / "cache"
    first = model_dir_sha256(model_dir, cache)
    assert len(reads) == 2
    assert (cache / CACHE_FILENAME).is_file()
    assert model_dir_sha256(model_dir, cache) == first
    assert len(reads) == 2  # nothing read again


def test_changed_file_is_detected(model_dir: Path, tmp_path: Path, reads: list[Path]):
    cache = tmp_path / "cache"
    before = model_dir_sha256(model_dir, cache)
    shard = model_dir / "model-00002-of-00002.safetensors"
    shard.write_bytes(b"a fine-tuned second shard")  # new content, size and mtime
    after = model_dir_sha256(model_dir, cache)
    assert after != before and after == full_read_digest(model_dir)
    assert reads[2:] == [shard]  # only the changed shard read again


def test_same_size_rewrite_with_a_new_mtime_is_detected(
    model_dir: Path, tmp_path: Path, reads: list[Path]
):
    cache = tmp_path / "cache"
    shard = model_dir / "model-00001-of-00002.safetensors"
    before = model_dir_sha256(model_dir, cache)
    stat = shard.stat()
    # Rewritten in place (same inode), same size, new content; mtime moved one second on (a
    # filesystem with a coarse clock could otherwise keep the old one).
    with open(shard, "r+b") as fh:
        fh.write(b"FIRST")
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert shard.stat().st_size == stat.st_size and shard.stat().st_ino == stat.st_ino
    after = model_dir_sha256(model_dir, cache)
    assert after != before and after == full_read_digest(model_dir)
    assert reads[2:] == [shard]


def test_replaced_file_with_the_same_size_and_mtime_is_detected(model_dir: Path, tmp_path: Path):
    """A copy renamed over the file (how most tools write) keeps nothing but the new inode."""
    cache = tmp_path / "cache"
    shard = model_dir / "model-00001-of-00002.safetensors"
    before = model_dir_sha256(model_dir, cache)
    stat = shard.stat()
    replacement = model_dir / "new.tmp"
    replacement.write_bytes(b"FIRST shard" + shard.read_bytes()[11:])
    os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(replacement, shard)
    assert model_dir_sha256(model_dir, cache) != before


def test_hub_blob_symlink_is_used_without_reading(tmp_path: Path, reads: list[Path]):
    """A hub cache snapshot: snapshots/<rev>/<file> -> ../../blobs/<sha256 of the file>."""
    repo = tmp_path / "hub" / "models--org--model"
    blobs = repo / "blobs"
    snapshot = repo / "snapshots" / "0123abcd"
    blobs.mkdir(parents=True)
    snapshot.mkdir(parents=True)
    content = b"hub weights" * 100
    blob_name = hashlib.sha256(content).hexdigest()
    (blobs / blob_name).write_bytes(content)
    (snapshot / "model.safetensors").symlink_to(f"../../blobs/{blob_name}")
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "model.safetensors").write_bytes(content)

    assert model_dir_sha256(snapshot, tmp_path / "cache") == full_read_digest(plain)
    assert reads == []


def test_symlink_to_a_non_blob_name_is_read(tmp_path: Path, reads: list[Path]):
    model = tmp_path / "model"
    model.mkdir()
    (tmp_path / "weights.bin").write_bytes(b"w" * 64)
    (model / "model.safetensors").symlink_to(tmp_path / "weights.bin")
    assert model_dir_sha256(model, tmp_path / "cache") == full_read_digest(model)
    assert len(reads) == 1


def test_unwritable_cache_dir_still_gives_the_digest(model_dir: Path, tmp_path: Path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory would be")
    assert model_dir_sha256(model_dir, blocker / "cache") == full_read_digest(model_dir)


def test_corrupt_cache_is_ignored(model_dir: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / CACHE_FILENAME).write_text("{not json")
    assert model_dir_sha256(model_dir, cache) == full_read_digest(model_dir)


def test_entries_of_removed_files_are_dropped(model_dir: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    other = tmp_path / "other"
    shutil.copytree(model_dir, other)
    model_dir_sha256(other, cache)
    shutil.rmtree(other)
    model_dir_sha256(model_dir, cache)
    text = (cache / CACHE_FILENAME).read_text()
    assert os.path.realpath(model_dir) in text and os.path.realpath(other) not in text
