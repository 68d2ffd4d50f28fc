"""Disk spool: order, crash recovery (torn last line), corruption, cursor persistence."""

from __future__ import annotations

from pathlib import Path

from serving.events.spool import DiskSpool, SpoolRecord


def _records(start: int, n: int, topic: str = "t") -> list[SpoolRecord]:
    return [
        SpoolRecord(topic, f"k{i}".encode(), f'{{"i": {i}}}'.encode())
        for i in range(start, start + n)
    ]


def _pending(spool: DiskSpool) -> list[SpoolRecord]:
    return [r for r, _ in spool.iter_pending(10**9)]


def test_append_read_commit_in_order(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, segment_bytes=4096)
    for start in range(0, 200, 20):  # rolls over to new 4 KiB segments between batches
        spool.append(_records(start, 20))
    assert len(list(tmp_path.glob("seg-*.log"))) > 1
    assert spool.depth == 200
    assert _pending(spool) == _records(0, 200)

    batch = list(spool.iter_pending(50))
    spool.commit(batch[-1][1], len(batch))
    assert spool.depth == 150
    assert _pending(spool) == _records(50, 150)

    # A new process sees the same pending records from the saved cursor.
    again = DiskSpool(tmp_path, segment_bytes=4096)
    assert again.depth == 150
    assert _pending(again) == _records(50, 150)


def test_fully_drained_spool_deletes_segments(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    spool.append(_records(0, 5))
    items = list(spool.iter_pending(100))
    spool.commit(items[-1][1], 5)
    assert spool.empty()
    assert list(tmp_path.glob("seg-*.log")) == []
    spool.append(_records(5, 2))
    assert _pending(spool) == _records(5, 2)
    assert DiskSpool(tmp_path).depth == 2


def test_torn_last_line_is_ignored_and_never_appended_to(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    spool.append(_records(0, 3))
    segment = next(tmp_path.glob("seg-*.log"))
    with open(segment, "ab") as fh:  # a crash in the middle of writing record 3
        fh.write(b'0badc0de {"t":"t","k":"k3","v":"{\\"i\\"')

    recovered = DiskSpool(tmp_path)
    assert recovered.depth == 3
    assert recovered.corrupt_records == 0
    recovered.append(_records(10, 2))  # goes to a new segment, after the torn tail
    assert _pending(recovered) == _records(0, 3) + _records(10, 2)
    assert len(list(tmp_path.glob("seg-*.log"))) == 2


def test_corrupt_middle_line_is_skipped_and_counted(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    spool.append(_records(0, 3))
    segment = next(tmp_path.glob("seg-*.log"))
    lines = segment.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b"k1", b"kX")  # CRC no longer matches
    segment.write_bytes(b"".join(lines))

    recovered = DiskSpool(tmp_path)
    assert _pending(recovered) == [_records(0, 3)[0], _records(0, 3)[2]]
    assert recovered.depth == 2
    assert recovered.corrupt_records >= 1
