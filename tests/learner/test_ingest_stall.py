"""The ingestor reports a consumer that is behind the broker but whose fetches return nothing
(the soak's symptom: a learner that looked idle while 40,000 events waited on the topics)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from learner import metrics
from learner.ingest import ingestor as ingestor_module
from learner.ingest.ingestor import Ingestor
from learner.store import TrainingStore
from learner.store.records import RawRecord
from tests.support.clock import FakeClock

pytestmark = pytest.mark.unit


class SilentSource:
    """A source whose polls return nothing while ``lag`` says the broker holds more."""

    def __init__(self, lag: int) -> None:
        self.lag = lag
        self.records: list[RawRecord] = []

    def poll(self, timeout_ms: int) -> list[RawRecord]:
        out, self.records = self.records, []
        return out

    def check_out_of_range(self, saved: object, on_reset: object, force: bool = False) -> int:
        return 0


def stalled_seconds() -> float:
    return float(metrics.CONSUMER_STALLED._value.get())


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    c = FakeClock()
    monkeypatch.setattr(ingestor_module.time, "monotonic", c)
    return c


def test_behind_and_empty_for_a_minute_is_warned_once_a_minute(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = TrainingStore(tmp_path / "store.sqlite", 60.0)
    ing = Ingestor(store, SilentSource(lag=5000))  # type: ignore[arg-type]
    caplog.set_level(logging.WARNING, logger="learner.ingest.ingestor")
    for _ in range(30):  # 30 polls over 58 s: below the threshold
        assert ing.step() == 0
        clock.now += 2.0
    assert not [r for r in caplog.records if "stalled" in r.message]
    assert 55.0 <= stalled_seconds() <= 60.0
    for _ in range(40):  # 80 s more: warned at 60 s and again at 120 s
        ing.step()
        clock.now += 2.0
    warnings = [r.message for r in caplog.records if "stalled" in r.message]
    assert len(warnings) == 2
    assert "5000 message(s) behind" in warnings[0]


def test_caught_up_or_reading_is_not_a_stall(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = TrainingStore(tmp_path / "store.sqlite", 60.0)
    source = SilentSource(lag=0)
    ing = Ingestor(store, source)  # type: ignore[arg-type]
    caplog.set_level(logging.WARNING, logger="learner.ingest.ingestor")
    for _ in range(100):  # caught up: idle for 200 s is normal
        ing.step()
        clock.now += 2.0
    assert stalled_seconds() == 0
    source.lag = 10
    for _ in range(20):
        ing.step()
        clock.now += 2.0
    assert stalled_seconds() > 0
    source.records = [RawRecord("rlhf.interactions", 0, 0, b"not json")]
    ing.step()  # a record read resets the clock
    assert stalled_seconds() == 0
    assert not [r for r in caplog.records if "stalled" in r.message]
