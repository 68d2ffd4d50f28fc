"""Versioned adapter store: ``{store}/{name}/v{N}/`` = adapter files + ``manifest.json``.

Atomic visibility (docs/architecture.md, "Adapter store and manifest"):
- local filesystem: files and then the manifest go into ``{store}/{name}/.tmp-*``, each fsynced,
  and the directory is renamed to ``v{N}`` (``rename(2)`` is atomic and fails if ``v{N}``
  exists, so a version is never overwritten);
- object stores (any other fsspec protocol, incl. ``memory://``) have no atomic directory
  rename, so files are written into ``v{N}/`` first and ``manifest.json`` last; readers
  (``versions``/``latest``) treat a version without a manifest as invisible, and a later
  publish of the same N simply overwrites the orphaned files.
A reader also refuses a manifest whose file digests do not match (``verify``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import fsspec

from learner import crash_points
from schemas.manifest import MANIFEST_FILENAME, PROMOTED_FILENAME, AdapterManifest, PromotedRecord
from schemas.versions import AdapterVersion

logger = logging.getLogger(__name__)

_VERSION_DIR = re.compile(r"^v([0-9]+)$")


class VersionExistsError(RuntimeError):
    pass


class AdapterStore:
    def __init__(self, url: str, adapter_name: str) -> None:
        self.url = url
        self.name = adapter_name
        self.fs, root = fsspec.core.url_to_fs(url)
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self.local = "file" in protocols or "local" in protocols
        self.root = root.rstrip("/")
        self.family = f"{self.root}/{adapter_name}"
        self.fs.makedirs(self.family, exist_ok=True)

    # ---- reading ---------------------------------------------------------------------------

    def version_dir(self, number: int) -> str:
        return f"{self.family}/v{number}"

    def uri(self, number: int) -> str:
        path = self.version_dir(number)
        return path if self.local else self.fs.unstrip_protocol(path)

    def versions(self) -> list[int]:
        """Visible version numbers (those with a manifest), ascending."""
        found = []
        for entry in self.fs.ls(self.family, detail=False):
            match = _VERSION_DIR.match(entry.rstrip("/").rsplit("/", 1)[-1])
            if match and self.fs.exists(f"{entry.rstrip('/')}/{MANIFEST_FILENAME}"):
                found.append(int(match.group(1)))
        return sorted(found)

    def all_numbers(self) -> list[int]:
        """Every v{N} directory, visible or not (an object-store publish may have died)."""
        out = []
        for entry in self.fs.ls(self.family, detail=False):
            match = _VERSION_DIR.match(entry.rstrip("/").rsplit("/", 1)[-1])
            if match:
                out.append(int(match.group(1)))
        return sorted(out)

    def manifest_bytes(self, number: int) -> bytes:
        return bytes(self.fs.cat_file(f"{self.version_dir(number)}/{MANIFEST_FILENAME}"))

    def manifest(self, number: int) -> AdapterManifest:
        return AdapterManifest.model_validate_json(self.manifest_bytes(number))

    def latest(self) -> AdapterManifest | None:
        numbers = self.versions()
        return self.manifest(numbers[-1]) if numbers else None

    def verify(self, number: int) -> list[str]:
        """Problems with version ``number`` (empty list = complete and intact)."""
        problems = []
        manifest = self.manifest(number)
        for name, digest in manifest.files.items():
            path = f"{self.version_dir(number)}/{name}"
            if not self.fs.exists(path):
                problems.append(f"{name}: missing")
            elif hashlib.sha256(self.fs.cat_file(path)).hexdigest() != digest:
                problems.append(f"{name}: sha256 mismatch")
        if manifest.version != str(AdapterVersion(self.name, number)):
            problems.append(f"manifest names {manifest.version}, directory is v{number}")
        return problems

    def download(self, number: int, dest: Path) -> Path:
        """Copy version ``number`` into local ``dest`` (for trainers, which need a path)."""
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        for name in self.manifest(number).files:
            (dest / name).write_bytes(self.fs.cat_file(f"{self.version_dir(number)}/{name}"))
        return dest

    # ---- writing ---------------------------------------------------------------------------

    def cleanup_temp(self) -> int:
        """Remove ``.tmp-*`` leftovers of publishes that died before their rename."""
        removed = 0
        for entry in self.fs.ls(self.family, detail=False):
            if entry.rstrip("/").rsplit("/", 1)[-1].startswith(".tmp-"):
                self.fs.rm(entry, recursive=True)
                removed += 1
        return removed

    def publish(self, adapter_dir: Path, manifest: AdapterManifest) -> tuple[str, str]:
        """Write ``adapter_dir``'s files + ``manifest``; returns (uri, sha256 of manifest)."""
        number = manifest.number
        data = manifest.model_dump_json(indent=2).encode("utf-8")
        files = {name: (adapter_dir / name).read_bytes() for name in manifest.files}
        if self.local:
            self._publish_local(number, files, data)
        else:
            self._publish_object_store(number, files, data)
        logger.info("published %s at %s", manifest.version, self.uri(number))
        return self.uri(number), hashlib.sha256(data).hexdigest()

    def promoted(self) -> PromotedRecord | None:
        """The record of the latest promoted version, if any was written."""
        try:
            return PromotedRecord.model_validate_json(
                self.fs.cat_file(f"{self.family}/{PROMOTED_FILENAME}")
            )
        except FileNotFoundError:
            return None

    def record_for(self, number: int, model_name: str) -> PromotedRecord:
        manifest = self.manifest(number)
        return PromotedRecord(
            model_name=model_name,
            version=manifest.version,
            uri=self.uri(number),
            manifest_sha256=hashlib.sha256(self.manifest_bytes(number)).hexdigest(),
        )

    def record_promoted(self, record: PromotedRecord) -> None:
        """Replace ``promoted.json`` in one step: a reader sees the old record or the new one."""
        data = record.model_dump_json(indent=2).encode("utf-8")
        target = f"{self.family}/{PROMOTED_FILENAME}"
        if self.local:
            tmp = Path(self.family) / f".tmp-promoted-{uuid.uuid4().hex}"
            _write_synced(tmp, data)
            os.replace(tmp, target)
            _fsync_dir(Path(self.family))
        else:
            self.fs.pipe_file(target, data)  # one object: written whole or not at all
        logger.info("recorded %s as the promoted version in the store", record.version)

    def _publish_local(self, number: int, files: dict[str, bytes], manifest: bytes) -> None:
        final = Path(self.version_dir(number))
        if final.exists():
            raise VersionExistsError(f"{final} already exists")
        tmp = Path(self.family) / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        for name, blob in files.items():
            _write_synced(tmp / name, blob)
        crash_points.crash_point("publish.after_files")
        _write_synced(tmp / MANIFEST_FILENAME, manifest)
        _fsync_dir(tmp)
        try:
            # os.rename onto an existing non-empty directory fails: versions stay immutable.
            os.rename(tmp, final)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise VersionExistsError(f"{final} already exists") from exc
        _fsync_dir(final.parent)
        crash_points.crash_point("publish.after_rename")

    def _publish_object_store(self, number: int, files: dict[str, bytes], manifest: bytes) -> None:
        final = self.version_dir(number)
        if self.fs.exists(f"{final}/{MANIFEST_FILENAME}"):
            raise VersionExistsError(f"{final} already exists")
        for name, blob in files.items():
            self.fs.pipe_file(f"{final}/{name}", blob)
        crash_points.crash_point("publish.after_files")
        self.fs.pipe_file(f"{final}/{MANIFEST_FILENAME}", manifest)
        crash_points.crash_point("publish.after_rename")


def _write_synced(path: Path, blob: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(blob)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_digests(adapter_dir: Path) -> dict[str, str]:
    """sha256 of every regular file directly in ``adapter_dir`` (manifest excluded)."""
    out: dict[str, str] = {}
    for path in sorted(adapter_dir.iterdir()):
        if path.is_file() and path.name != MANIFEST_FILENAME:
            out[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def as_json_config(config: Any) -> dict[str, Any]:
    """A trainer config (dataclass or pydantic) as plain JSON-able data for the manifest."""
    import dataclasses

    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    if hasattr(config, "model_dump"):
        return dict(config.model_dump(mode="json"))
    return dict(config) if isinstance(config, dict) else {"repr": repr(config)}
