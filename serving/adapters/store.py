"""Find, fetch and verify one adapter version before it may reach the engine.

Store layout (docs/architecture.md): ``{adapter_store}/{adapter_name}/v{N}/`` with the PEFT files
and ``manifest.json`` (``schemas.manifest.AdapterManifest``). A directory may be a local path or any
fsspec URL; remote directories are copied into a local cache first (the engines load from a path),
into a temporary sibling renamed into place, so a half-copied version is never used.

Checks, each refused with its own reason label: the manifest exists and parses, its sha256
equals the published ``manifest_sha256`` (when known), it names the requested version, every
listed file exists with the listed sha256, and ``base_model_sha256`` equals the hash of the
base model this replica serves. Verification hashes the local copy the engine will load.

A local version is loaded where it lies, so links are resolved first: the version directory and
every file read must resolve to a path under ``{adapter_store}/{adapter_name}/`` (refused with
``outside_store`` otherwise), and what is opened is the resolved path, never the name as given.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import posixpath
import shutil
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import fsspec
from pydantic import ValidationError

from schemas.manifest import MANIFEST_FILENAME, PROMOTED_FILENAME, AdapterManifest, PromotedRecord
from schemas.versions import AdapterVersion
from serving.adapters.errors import (
    AdapterError,
    AdapterNotFound,
    AdapterRefused,
    AdapterStateError,
)

logger = logging.getLogger(__name__)

# O_NOFOLLOW: the resolved path is opened without following a link that was put in its place
# after the check. O_NONBLOCK: a FIFO planted under a file's name cannot hang the fetch (it is
# refused as not a regular file); reads of regular files ignore the flag.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


@dataclass(frozen=True)
class VerifiedAdapter:
    version: str
    path: Path  # local directory the engine loads
    uri: str  # where it came from
    manifest: AdapterManifest


def parse_version(version: str, adapter_name: str) -> int:
    """The N of ``"{adapter_name}@v{N}"``; AdapterStateError for anything else."""
    try:
        parsed = AdapterVersion.parse(version)
    except ValueError as exc:
        raise AdapterStateError("bad_version", str(exc)) from None
    if parsed.name != adapter_name:
        raise AdapterStateError(
            "wrong_family", f"{version} is not a version of {adapter_name!r} (this replica)"
        )
    return parsed.number


def default_uri(store: str, adapter_name: str, number: int) -> str:
    return AdapterVersion(adapter_name, number).store_dir(store)


def _normalized(uri: str) -> str:
    """``protocol://`` + the path with ``.``/``..`` resolved (local paths made absolute)."""
    fs, path = fsspec.core.url_to_fs(uri)
    protocol = fs.protocol[0] if isinstance(fs.protocol, tuple) else fs.protocol
    if protocol in ("file", "local"):
        return "file://" + os.path.abspath(path)
    return f"{protocol}://" + posixpath.normpath("/" + path.lstrip("/"))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _stream_sha256(fh: BinaryIO) -> str:
    digest = hashlib.sha256()
    while block := fh.read(1 << 20):
        digest.update(block)
    return digest.hexdigest()


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


def _realpath(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _resolved_under(path: Path, boundary: Path) -> Path:
    """``path`` with every link resolved, if that lies under ``boundary`` (itself resolved);
    ``outside_store`` otherwise. The ``..`` check on the uri cannot see where links lead."""
    resolved = _realpath(path)
    if resolved == boundary or not resolved.is_relative_to(boundary):
        raise AdapterRefused(
            "outside_store", f"{path} resolves to {resolved}, outside {boundary} (the store)"
        )
    return resolved


def _open_under(path: Path, boundary: Path) -> BinaryIO:
    """``path`` opened for reading through its resolved path, which must lie under ``boundary``.

    The resolved path is what gets opened, so a link re-pointed between the check and the open
    is never followed (the open fails: ``outside_store``). Anything but a regular file raises
    FileNotFoundError: for the callers there is no file to read there."""
    resolved = _resolved_under(path, boundary)
    try:
        fd = os.open(resolved, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise AdapterRefused(
                "outside_store", f"{path} became a link while it was being checked"
            ) from None
        raise
    fh = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        fh.close()
        raise FileNotFoundError(errno.ENOENT, "not a regular file", str(path))
    return fh


class AdapterFetcher:
    """Resolves version directories and returns verified local copies (blocking; run in a
    worker thread)."""

    def __init__(
        self, store: str, adapter_name: str, cache_dir: str | Path, base_model_sha256: str
    ) -> None:
        self.store = store
        self.adapter_name = adapter_name
        self.cache_dir = Path(cache_dir)
        self.base_model_sha256 = base_model_sha256

    def promoted(self) -> PromotedRecord | None:
        """The learner's record of its latest promoted version, or None if there is none or it
        cannot be read (the caller then serves what it has)."""
        fs, root = fsspec.core.url_to_fs(self.store)
        path = f"{root.rstrip('/')}/{self.adapter_name}/{PROMOTED_FILENAME}"
        try:
            return PromotedRecord.model_validate_json(fs.cat_file(path))
        except FileNotFoundError:
            return None
        except (OSError, ValidationError) as exc:
            logger.warning("cannot read %s: %s", path, exc)
            return None

    def fetch(
        self, version: str, uri: str | None = None, manifest_sha256: str | None = None
    ) -> VerifiedAdapter:
        number = parse_version(version, self.adapter_name)
        uri = uri or default_uri(self.store, self.adapter_name, number)
        self._check_inside_store(version, uri)
        fs, root = fsspec.core.url_to_fs(uri)
        root = root.rstrip("/")
        if _is_local(fs):
            return self._fetch_local(version, uri, Path(root), manifest_sha256)
        # Object stores have no links: the names checked above are the names read.
        try:
            raw = bytes(fs.cat_file(f"{root}/{MANIFEST_FILENAME}"))
        except FileNotFoundError:
            raise _no_manifest(version, uri, fs.exists(root)) from None
        manifest = self._check_manifest(version, uri, raw, manifest_sha256)
        local = self._remote_copy(fs, root, uri, manifest, raw)
        self._check_files(local, manifest, _realpath(local))
        return VerifiedAdapter(version=version, path=local, uri=uri, manifest=manifest)

    def _fetch_local(
        self, version: str, uri: str, root: Path, manifest_sha256: str | None
    ) -> VerifiedAdapter:
        """Verify a local version where it lies. The engine gets the resolved directory and
        every read goes through a resolved path, so a link out of the store (the version
        directory, the manifest or a weights file) is refused, never followed."""
        family = self._local_family()
        local = _resolved_under(root, family)
        try:
            with _open_under(local / MANIFEST_FILENAME, family) as fh:
                raw = fh.read()
        except FileNotFoundError:
            raise _no_manifest(version, uri, local.is_dir()) from None
        manifest = self._check_manifest(version, uri, raw, manifest_sha256)
        self._check_files(local, manifest, family)
        return VerifiedAdapter(version=version, path=local, uri=uri, manifest=manifest)

    def _local_family(self) -> Path:
        """``{adapter_store}/{adapter_name}`` with the store's own links resolved (a store
        mounted through a link is fine) but not the family's: a family directory that is a
        link out of the store is refused like any other."""
        _, store_root = fsspec.core.url_to_fs(self.store)
        return _realpath(Path(store_root)) / self.adapter_name

    def _check_inside_store(self, version: str, uri: str) -> None:
        """Only versions of this replica's family in its own store are loaded: a uri from an
        event or an admin request cannot point serving at files anywhere else. (This compares
        names; where links lead is checked when a local version is read, ``_fetch_local``.)"""
        family = _normalized(default_uri(self.store, self.adapter_name, 0)).rsplit("/", 1)[0]
        if not _normalized(uri).startswith(family + "/"):
            raise AdapterRefused(
                "outside_store", f"{version}: {uri} is not under {family} (the adapter store)"
            )

    def _check_manifest(
        self, version: str, uri: str, raw: bytes, expected_sha256: str | None
    ) -> AdapterManifest:
        if expected_sha256 is not None and _sha256(raw) != expected_sha256:
            raise AdapterRefused(
                "manifest_checksum",
                f"{uri}/{MANIFEST_FILENAME} sha256 {_sha256(raw)} does not "
                f"match the published {expected_sha256}",
            )
        try:
            manifest = AdapterManifest.model_validate_json(raw)
        except ValidationError as exc:
            raise AdapterRefused("manifest_invalid", f"{uri}: {exc.errors()[0]['msg']}") from None
        if manifest.version != version:
            raise AdapterRefused(
                "version_mismatch", f"{uri} holds {manifest.version}, not {version}"
            )
        if manifest.base_model_sha256 != self.base_model_sha256:
            raise AdapterRefused(
                "base_model_mismatch",
                f"{version} was trained on base model "
                f"{manifest.base_model_sha256[:12]}..., this replica serves "
                f"{self.base_model_sha256[:12]}...",
            )
        for name in manifest.files:
            if name in ("", ".", "..") or "/" in name or "\\" in name or name == MANIFEST_FILENAME:
                raise AdapterRefused("manifest_invalid", f"{uri}: bad file name {name!r}")
        return manifest

    def _remote_copy(
        self,
        fs: fsspec.AbstractFileSystem,
        root: str,
        uri: str,
        manifest: AdapterManifest,
        raw: bytes,
    ) -> Path:
        # Copy into the cache keyed by the manifest digest (versions are immutable).
        target = self.cache_dir / self.adapter_name / f"v{manifest.number}-{_sha256(raw)[:16]}"
        if (target / MANIFEST_FILENAME).is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            for name in manifest.files:
                try:
                    (tmp / name).write_bytes(bytes(fs.cat_file(f"{root}/{name}")))
                except FileNotFoundError:
                    raise AdapterRefused("file_missing", f"{uri}/{name} is missing") from None
            (tmp / MANIFEST_FILENAME).write_bytes(raw)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        logger.info("copied %s to %s", uri, target)
        return target

    def _check_files(self, local: Path, manifest: AdapterManifest, boundary: Path) -> None:
        """Hash each listed file as opened through its resolved path under ``boundary`` (the
        store's family directory, or the cache copy of a remote version)."""
        for name, digest in manifest.files.items():
            path = local / name
            try:
                with _open_under(path, boundary) as fh:
                    actual = _stream_sha256(fh)
            except FileNotFoundError:
                raise AdapterRefused("file_missing", f"{path} is missing") from None
            if actual != digest:
                raise AdapterRefused(
                    "file_checksum",
                    f"{path}: sha256 {actual[:12]}... but the manifest says {digest[:12]}...",
                )


def _no_manifest(version: str, uri: str, dir_exists: bool) -> AdapterError:
    if not dir_exists:
        return AdapterNotFound("not_found", f"{version}: no directory at {uri}")
    return AdapterRefused("manifest_missing", f"{uri} has no {MANIFEST_FILENAME}")
