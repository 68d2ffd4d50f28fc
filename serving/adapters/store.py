"""Find, fetch and verify one adapter version before it may reach the engine.

Store layout (docs/architecture.md): ``{adapter_store}/{adapter_name}/v{N}/`` with the PEFT files
and ``manifest.json`` (``schemas.manifest.AdapterManifest``). A directory may be a local path or any
fsspec URL; remote directories are copied into a local cache first (the engines load from a path),
into a temporary sibling renamed into place, so a half-copied version is never used.

Checks, each refused with its own reason label: the manifest exists and parses, its sha256
equals the published ``manifest_sha256`` (when known), it names the requested version, every
listed file exists with the listed sha256, and ``base_model_sha256`` equals the hash of the
base model this replica serves. Verification hashes the local copy the engine will load.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import fsspec
from pydantic import ValidationError

from schemas.manifest import MANIFEST_FILENAME, PROMOTED_FILENAME, AdapterManifest, PromotedRecord
from schemas.versions import AdapterVersion
from serving.adapters.errors import AdapterNotFound, AdapterRefused, AdapterStateError

logger = logging.getLogger(__name__)


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


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


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
        try:
            raw = bytes(fs.cat_file(f"{root}/{MANIFEST_FILENAME}"))
        except FileNotFoundError:
            if not fs.exists(root):
                raise AdapterNotFound("not_found", f"{version}: no directory at {uri}") from None
            raise AdapterRefused("manifest_missing", f"{uri} has no {MANIFEST_FILENAME}") from None
        manifest = self._check_manifest(version, uri, raw, manifest_sha256)
        local = self._local_copy(fs, root, uri, manifest, raw)
        self._check_files(local, manifest)
        return VerifiedAdapter(version=version, path=local, uri=uri, manifest=manifest)

    def _check_inside_store(self, version: str, uri: str) -> None:
        """Only versions of this replica's family in its own store are loaded: a uri from an
        event or an admin request cannot point serving at files anywhere else."""
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

    def _local_copy(
        self,
        fs: fsspec.AbstractFileSystem,
        root: str,
        uri: str,
        manifest: AdapterManifest,
        raw: bytes,
    ) -> Path:
        protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
        if "file" in protocols or "local" in protocols:
            return Path(root)
        # Remote: copy into the cache keyed by the manifest digest (versions are immutable).
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

    def _check_files(self, local: Path, manifest: AdapterManifest) -> None:
        for name, digest in manifest.files.items():
            path = local / name
            if not path.is_file():
                raise AdapterRefused("file_missing", f"{path} is missing")
            actual = _file_sha256(path)
            if actual != digest:
                raise AdapterRefused(
                    "file_checksum",
                    f"{path}: sha256 {actual[:12]}... but the manifest says {digest[:12]}...",
                )
