"""Append-only disk spool for events Kafka did not take (docs/architecture.md, "Event logging").

Layout under ``spool_dir``: segment files ``seg-000000000001.log`` ... and ``cursor.json``.
Each record is one line ``<crc32 hex> <json>\\n`` where the JSON holds topic, key and value.
Records are appended in emit order and read back in the same order, so re-sending the spool
front to back preserves per-topic order.

Crash safety (the write-ahead-log pattern of Kafka's own log segments and SQLite's WAL):

- A process only ever appends to a segment it created itself; a new process starts a new
  segment, so a torn last line left by a crash is never followed by good data in that file.
- On reading, a last line without its newline or whose CRC does not match is a torn write and
  is ignored; a bad line in the middle of a segment is counted and skipped.
- The read position (segment, byte offset) is saved in ``cursor.json`` by write-to-temp then
  ``os.replace`` after each delivered batch, so a restart re-sends at most one batch twice
  (consumers deduplicate by ``event_id``).

fsync policy: the writer calls :meth:`DiskSpool.append` with a whole batch, which is written and
``fsync``-ed once (group commit); new segment files and the cursor also fsync their directory.
An event is durable once ``append`` returns; events still in the in-memory queue when the process
is killed with SIGKILL are lost (a graceful stop spools them).
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

_SEGMENT_PREFIX = "seg-"
_SEGMENT_SUFFIX = ".log"
_CURSOR = "cursor.json"


@dataclass(frozen=True)
class SpoolRecord:
    topic: str
    key: bytes
    value: bytes


@dataclass(frozen=True)
class SpoolPosition:
    segment: int
    offset: int  # byte offset of the next unread line in ``segment``


def _encode(record: SpoolRecord) -> bytes:
    body = json.dumps(
        {"t": record.topic, "k": record.key.decode("utf-8"), "v": record.value.decode("utf-8")},
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8")
    return b"%08x %s\n" % (zlib.crc32(body), body)


def _decode(line: bytes) -> SpoolRecord | None:
    if not line.endswith(b"\n") or len(line) < 10 or line[8:9] != b" ":
        return None
    body = line[9:-1]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return None
        data = json.loads(body)
        return SpoolRecord(data["t"], data["k"].encode("utf-8"), data["v"].encode("utf-8"))
    except (ValueError, KeyError, TypeError):
        return None


class DiskSpool:
    """Ordered on-disk FIFO of records. Not thread-safe: one delivery thread owns it."""

    def __init__(self, directory: str | Path, segment_bytes: int = 16 << 20) -> None:
        self.dir = Path(directory)
        self.segment_bytes = segment_bytes
        self.corrupt_records = 0
        self.dir.mkdir(parents=True, exist_ok=True)
        self._cursor = self._load_cursor()
        self._depth = self._count_pending()
        # Appends always go to a segment this process created (see module docstring).
        self._write_segment = max(self._segments(), default=0) + 1
        self._write_file: Path | None = None

    # ---- state ---------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        """Records written and not yet acknowledged as delivered."""
        return self._depth

    def empty(self) -> bool:
        return self._depth == 0

    def _segments(self) -> list[int]:
        found = []
        for path in self.dir.glob(f"{_SEGMENT_PREFIX}*{_SEGMENT_SUFFIX}"):
            number = path.name[len(_SEGMENT_PREFIX) : -len(_SEGMENT_SUFFIX)]
            if number.isdigit():
                found.append(int(number))
        return sorted(found)

    def _path(self, segment: int) -> Path:
        return self.dir / f"{_SEGMENT_PREFIX}{segment:012d}{_SEGMENT_SUFFIX}"

    def _load_cursor(self) -> SpoolPosition:
        segments = self._segments()
        first = segments[0] if segments else 1
        try:
            data = json.loads((self.dir / _CURSOR).read_text())
            pos = SpoolPosition(int(data["segment"]), int(data["offset"]))
        except (OSError, ValueError, KeyError, TypeError):
            return SpoolPosition(first, 0)
        # A cursor pointing at a deleted segment means that segment was fully delivered.
        return pos if pos.segment >= first else SpoolPosition(first, 0)

    def _count_pending(self) -> int:
        return sum(1 for _ in self._iter_from(self._cursor))

    # ---- writing -------------------------------------------------------------------------
    def append(self, records: list[SpoolRecord]) -> None:
        """Write ``records`` in order and fsync; raises OSError when the disk fails."""
        if not records:
            return
        data = b"".join(_encode(r) for r in records)
        path = self._path(self._write_segment)
        if path.exists() and path.stat().st_size + len(data) > self.segment_bytes:
            self._write_segment += 1
            path = self._path(self._write_segment)
        new_file = not path.exists()
        with open(path, "ab") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if new_file:
            self._fsync_dir()
        self._depth += len(records)

    def _fsync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # ---- reading -------------------------------------------------------------------------
    def _iter_from(self, start: SpoolPosition) -> Iterator[tuple[SpoolRecord, SpoolPosition]]:
        """Records from ``start`` on, each with the position just after it."""
        for segment in self._segments():
            if segment < start.segment:
                continue
            offset = start.offset if segment == start.segment else 0
            with open(self._path(segment), "rb") as fh:
                fh.seek(offset)
                for line in fh:
                    offset += len(line)
                    record = _decode(line)
                    if record is None:
                        if line.endswith(b"\n"):
                            self.corrupt_records += 1
                            logger.error(
                                "spool %s: corrupt record at byte %d skipped",
                                self._path(segment).name,
                                offset - len(line),
                            )
                        continue  # else: torn last line of a crashed writer, ignored
                    yield record, SpoolPosition(segment, offset)

    def iter_pending(self, limit: int) -> Iterator[tuple[SpoolRecord, SpoolPosition]]:
        """Up to ``limit`` oldest undelivered records, each with the position after it."""
        for count, item in enumerate(self._iter_from(self._cursor), start=1):
            yield item
            if count >= limit:
                return

    def commit(self, position: SpoolPosition, delivered: int) -> None:
        """Mark everything before ``position`` delivered; delete fully delivered segments."""
        self._cursor = position
        self._depth = max(0, self._depth - delivered)
        if self._depth == 0:
            # Fully drained: drop every segment (a torn tail included) and start clean.
            for segment in self._segments():
                self._path(segment).unlink(missing_ok=True)
            self._write_segment = max(self._write_segment, position.segment) + 1
            self._cursor = SpoolPosition(self._write_segment, 0)
        else:
            for segment in self._segments():
                if segment < position.segment:
                    self._path(segment).unlink(missing_ok=True)
        self._save_cursor()

    def _save_cursor(self) -> None:
        tmp = self.dir / (_CURSOR + ".tmp")
        with open(tmp, "w") as fh:
            json.dump({"segment": self._cursor.segment, "offset": self._cursor.offset}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.dir / _CURSOR)
        self._fsync_dir()
