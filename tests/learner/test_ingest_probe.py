"""The saved-position check does not mistake a broker that is away for one that lost the data.

A broker stopped while the learner re-reads its last consumed message (the periodic
out-of-range check) used to make the empty read count as "offset no longer held": the learner
started a new epoch from offset 0 though the broker, on disk, still held everything (seen in
tests/loop/test_loop_faults_e2e). Now the check is inconclusive until the broker answers.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from kafka import KafkaProducer, TopicPartition

from devtools.broker import DevBroker, free_port
from learner.ingest.consumer import KafkaSource, ProbeInconclusive
from learner.store.db import message_digest
from learner.store.records import PartitionPosition

pytestmark = pytest.mark.kafka
TOPIC = "rlhf.feedback"


def test_broker_away_is_inconclusive_and_keeps_the_position(tmp_path: Path) -> None:
    broker = DevBroker(port=free_port(), data_dir=tmp_path / "data", topics=[TOPIC])
    broker.start()
    source: KafkaSource | None = None
    try:
        values = [b"m%d" % i for i in range(6)]
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        for value in values:
            producer.send(TOPIC, value=value).get(timeout=10)
        producer.close()
        tp = TopicPartition(TOPIC, 0)
        source = KafkaSource(broker.bootstrap, [TOPIC])
        source.assign_all()
        pos = PartitionPosition(TOPIC, 0, 6, last_digest=message_digest(values[-1]))
        assert source._still_held(tp, pos, 0, 6)

        resets: list[tuple[str, int, int, str]] = []
        broker.stop()
        with pytest.raises(ProbeInconclusive):
            source._still_held(tp, pos, 0, 6)  # offsets read just before the broker went away
        with pytest.raises(ProbeInconclusive):
            source._still_held(tp, pos, 0, 3)  # the saved offset past the reported end (Tansu)
        assert resets == []

        broker.start()  # same port, same storage: the position is still good
        # A broker just back may still be too slow to answer (inconclusive: callers retry).
        assert _held_after_retries(source, tp, pos)
        saved = {(TOPIC, 0): pos}
        assert source.check_out_of_range(saved, lambda *a: resets.append(a), force=True) == 0
        assert resets == []
        # A different message at that offset is still detected as a lost position.
        other = PartitionPosition(TOPIC, 0, 6, last_digest=message_digest(b"else"))
        assert not source._still_held(tp, other, 0, 6)
    finally:
        if source is not None:
            source.close()
        broker.stop()


def _held_after_retries(
    source: KafkaSource, tp: TopicPartition, pos: PartitionPosition, seconds: float = 30.0
) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return source._still_held(tp, pos, 0, 6)
        except ProbeInconclusive:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
