"""The base model's fingerprint (``model_dir_sha256``), computed once per weight file and reused.

Adapter manifests carry a digest of the base's ``*.safetensors`` files, and serving and the
learner compute it at every start to refuse an adapter trained on another base. Reading every
byte of the weights for it costs a 16 GB read per replica start for an 8B model, so each file's
sha256 is taken, cheapest first, from:

1. **The checkpoint's own index.** In a Hugging Face hub cache snapshot each weight file is a
   symlink to ``../../blobs/<name>``, and a Git LFS object (every safetensors file on the hub)
   is named by the sha256 of its content (https://huggingface.co/docs/huggingface_hub/guides/
   manage-cache, "blobs"; https://github.com/git-lfs/git-lfs/blob/main/docs/spec.md): a link
   whose target is a 64-hex name in a ``blobs`` directory gives the digest without a read.
2. **A local cache** (``<RLHF_CACHE_DIR>/weight-digests.json``), keyed by the file's resolved
   path and its (size, mtime_ns, inode, device): any rewrite changes at least one of them
   unless the writer forges the mtime back onto the same inode at the same size. The model
   directory is never written (it is often a read-only volume); when the cache directory is
   not writable either the digest is computed and the cache skipped (logged once, at debug).
3. **A full read** of the file, whose result then goes to the cache.

The combined digest is exactly what a full read of every file gives (manifests in existing
adapter stores carry it): sha256 over each file's name and hex digest, in name order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CACHE_FILENAME = "weight-digests.json"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_unwritable_logged = False


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """The sha256 of a file's content, read in full."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def model_dir_sha256(path: Path, cache_dir: Path | None = None) -> str:
    """Digest of a model directory's weight files: the base-model hash in adapter manifests.

    ``cache_dir`` is the cache root (default: ``RLHF_CACHE_DIR``, as for the embedded model).
    """
    from common.embedded_model import default_cache_dir

    cache_file = (cache_dir or default_cache_dir()) / CACHE_FILENAME
    cache = _read_cache(cache_file)
    changed = False
    digest = hashlib.sha256()
    for weights in sorted(path.glob("*.safetensors")):
        file_digest = hub_blob_sha256(weights)
        if file_digest is None:
            real = os.path.realpath(weights)
            key = _stat_key(real)
            entry = cache.get(real)
            if isinstance(entry, dict) and entry.get("key") == key:
                file_digest = str(entry["sha256"])
            else:
                file_digest = file_sha256(weights)
                cache[real] = {"key": key, "sha256": file_digest}
                changed = True
        digest.update(weights.name.encode())
        digest.update(file_digest.encode())
    if changed:
        _write_cache(cache_file, cache)
    return digest.hexdigest()


def hub_blob_sha256(weights: Path) -> str | None:
    """The sha256 a hub-cache symlink's target is named by, or None for any other file."""
    if not weights.is_symlink():
        return None
    target = Path(os.readlink(weights))
    if target.parent.name == "blobs" and _HEX64.fullmatch(target.name):
        return target.name
    return None


def _stat_key(real: str) -> list[int]:
    st = os.stat(real)
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev]


def _read_cache(cache_file: Path) -> dict[str, Any]:
    try:
        data = json.loads(cache_file.read_text())
    except (OSError, ValueError):  # absent, unreadable or half-written by a foreign writer
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(cache_file: Path, cache: dict[str, Any]) -> None:
    """Replace the cache atomically; entries of files that no longer exist are dropped.

    Two processes writing at once lose one's new entries, which only costs a later re-read.
    """
    kept = {name: entry for name, entry in cache.items() if os.path.exists(name)}
    tmp: str | None = None
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_file.parent, prefix=".tmp-weight-digests-")
        with os.fdopen(fd, "w") as fh:
            json.dump(kept, fh, indent=0, sort_keys=True)
        os.replace(tmp, cache_file)
    except OSError as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        _log_unwritable(cache_file, exc)


def _log_unwritable(cache_file: Path, exc: OSError) -> None:
    global _unwritable_logged
    if not _unwritable_logged:
        _unwritable_logged = True
        logger.debug("weight digest cache %s not writable (%s): not cached", cache_file, exc)
