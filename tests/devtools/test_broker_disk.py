"""Disk storage for the dev broker: ``devtools.local_s3`` (the S3 subset Tansu's ``s3://`` engine
uses) and ``DevBroker(data_dir=...)``, which keeps every topic across a stop and a start on the
same port."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from devtools.broker import DevBroker, free_port
from devtools.local_s3 import LocalS3Server


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[LocalS3Server]:
    server = LocalS3Server(tmp_path / "objects").start()
    yield server
    server.stop()


def test_conditional_writes(s3: LocalS3Server) -> None:
    url = f"{s3.endpoint}/bucket/clusters/a/meta.json"
    created = httpx.put(url, content=b"one", headers={"If-None-Match": "*"})
    assert created.status_code == 200
    etag = created.headers["ETag"]
    # Create-only fails once the object exists; update needs the current ETag.
    assert httpx.put(url, content=b"x", headers={"If-None-Match": "*"}).status_code == 412
    assert httpx.put(url, content=b"x", headers={"If-Match": '"stale"'}).status_code == 412
    updated = httpx.put(url, content=b"two", headers={"If-Match": etag})
    assert updated.status_code == 200 and updated.headers["ETag"] != etag
    got = httpx.get(url)
    assert got.content == b"two" and got.headers["ETag"] == updated.headers["ETag"]
    assert "Last-Modified" in got.headers
    assert httpx.get(url, headers={"If-None-Match": got.headers["ETag"]}).status_code == 304
    assert httpx.put(f"{s3.endpoint}/bucket/nope", headers={"If-Match": etag}).status_code == 404


def test_get_range_head_delete(s3: LocalS3Server) -> None:
    url = f"{s3.endpoint}/bucket/k"
    httpx.put(url, content=b"0123456789")
    part = httpx.get(url, headers={"Range": "bytes=2-4"})
    assert part.status_code == 206 and part.content == b"234"
    assert part.headers["Content-Range"] == "bytes 2-4/10"
    assert httpx.get(url, headers={"Range": "bytes=-3"}).content == b"789"
    assert httpx.get(url, headers={"Range": "bytes=7-"}).content == b"789"
    head = httpx.head(url)
    assert head.status_code == 200 and head.headers["Content-Length"] == "10"
    assert httpx.delete(url).status_code == 204
    missing = httpx.get(url)
    assert missing.status_code == 404 and b"NoSuchKey" in missing.content
    assert httpx.head(url).status_code == 404


def test_list_with_prefix_delimiter_and_pages(s3: LocalS3Server) -> None:
    for key in ("a/1", "a/2", "a/b/3", "a/b/4", "a/c/5", "z"):
        httpx.put(f"{s3.endpoint}/bucket/{key}", content=key.encode())
    shallow = httpx.get(f"{s3.endpoint}/bucket?list-type=2&prefix=a/&delimiter=/").text
    assert "<Key>a/1</Key>" in shallow and "<Key>a/2</Key>" in shallow
    assert "<Prefix>a/b/</Prefix>" in shallow and "<Prefix>a/c/</Prefix>" in shallow
    assert "a/b/3" not in shallow and "<Key>z</Key>" not in shallow
    keys: list[str] = []
    token = ""
    while True:
        page = httpx.get(
            f"{s3.endpoint}/bucket",
            params={"list-type": "2", "prefix": "a/", "max-keys": "2", "continuation-token": token},
        ).text
        keys += [chunk.split("</Key>")[0] for chunk in page.split("<Key>")[1:]]
        if "<IsTruncated>true</IsTruncated>" not in page:
            break
        token = page.split("<NextContinuationToken>")[1].split("<")[0]
    assert keys == ["a/1", "a/2", "a/b/3", "a/b/4", "a/c/5"]


def test_objects_outlive_the_server(tmp_path: Path) -> None:
    first = LocalS3Server(tmp_path / "objects").start()
    httpx.put(f"{first.endpoint}/bucket/x/y", content=b"kept")
    first.stop()
    second = LocalS3Server(tmp_path / "objects").start()
    try:
        assert httpx.get(f"{second.endpoint}/bucket/x/y").content == b"kept"
    finally:
        second.stop()


def _read(bootstrap: str, topic: str, expect: int, timeout: float = 20.0) -> list[bytes]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        out: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(out) < expect and time.monotonic() < deadline:
            out += [m.value for m in consumer.poll(timeout_ms=300).get(tp, [])]
        # One more poll: nothing beyond what was expected.
        out += [m.value for m in consumer.poll(timeout_ms=500).get(tp, [])]
        return out
    finally:
        consumer.close()


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for value in values:
        producer.send(topic, key=b"k", value=value)
    producer.flush()
    producer.close()


@pytest.mark.kafka
def test_disk_broker_keeps_topics_across_restart_on_same_port(tmp_path: Path) -> None:
    port = free_port()
    broker = DevBroker(port=port, data_dir=tmp_path / "data", log_path=tmp_path / "tansu.log")
    broker.start()
    try:
        first = [b"v%d" % i for i in range(20)]
        _produce(broker.bootstrap, "rlhf.feedback", first)
        assert _read(broker.bootstrap, "rlhf.feedback", 20) == first
        broker.restart()
        assert broker.port == port and broker.bootstrap == f"127.0.0.1:{port}"
        assert _read(broker.bootstrap, "rlhf.feedback", 20) == first
        # New records continue the same log after the old ones.
        _produce(broker.bootstrap, "rlhf.feedback", [b"after"])
        assert _read(broker.bootstrap, "rlhf.feedback", 21) == [*first, b"after"]
        # A second DevBroker on the same directory (a new process, say) sees it all too.
        broker.stop()
        again = DevBroker(port=port, data_dir=tmp_path / "data").start()
        try:
            assert _read(again.bootstrap, "rlhf.feedback", 21) == [*first, b"after"]
        finally:
            again.stop()
    finally:
        broker.stop()
