"""A real headless Chromium votes through the web page; the vote arrives on the real broker.

The app runs under uvicorn with the fake engine and the real EventLogger; the browser is Debian
chromium driven by selenium through the system chromedriver (no driver download).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from devtools.broker import DevBroker
from schemas.codec import decode_event
from schemas.events import FeedbackCorrection, FeedbackPreference, FeedbackRating, PairServed
from serving.app import create_app
from serving.engines.fake import FakeEngine
from serving.events.logger import EventLogger
from tests.serving.fakes import FakeAdapters
from tests.serving.live import live_server
from tests.support.kafka_read import read_topic
from tests.support.serving import make_settings

pytestmark = [pytest.mark.browser, pytest.mark.kafka]

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def _browser(profile: Path) -> Any:
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (pip install selenium==4.51.0)"
    )
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        pytest.skip("[browser tier] chromium and chromium-driver are not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)


def _wait(predicate: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting in the browser")


def _events(bootstrap: str, topic: str, cls: type, test: Any, expect: int = 1) -> list[Any]:
    deadline = time.monotonic() + 30
    while True:
        found = [
            d.event
            for d in map(decode_event, (v for _k, v in read_topic(bootstrap, topic)))
            if d.ok and isinstance(d.event, cls) and test(d.event)
        ]
        if len(found) >= expect or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


def test_vote_in_browser_reaches_kafka(kafka_broker: DevBroker, tmp_path: Path) -> None:
    settings = make_settings(
        kafka_enabled=True,
        kafka_bootstrap=kafka_broker.bootstrap,
        spool_dir=str(tmp_path / "spool"),
    )
    engine = FakeEngine(token_delay=0.01)
    app = create_app(
        settings, engine=engine, events=EventLogger(settings), adapters=FakeAdapters(engine)
    )
    with live_server(app) as (_server, port):
        browser = _browser(tmp_path / "profile")
        try:
            browser.get(f"http://127.0.0.1:{port}/")
            prompt = f"Browser question {time.time_ns()}?"
            browser.find_element("id", "prompt").send_keys(prompt)
            browser.find_element("id", "send").click()
            _wait(lambda: browser.find_element("id", "answer-b").text)
            shown_a = browser.find_element("id", "answer-a").text
            shown_b = browser.find_element("id", "answer-b").text
            browser.find_element("id", "up-a").click()
            _wait(lambda: "Rated answer A up" in browser.find_element("id", "status").text)
            browser.find_element("id", "fix-b").click()
            box = browser.find_element("id", "correction-text")
            box.clear()
            box.send_keys("A hand-written better answer.")
            browser.find_element("id", "correction-send").click()
            _wait(lambda: "answer was recorded" in browser.find_element("id", "status").text)
            browser.find_element("id", "vote-b").click()
            status = _wait(
                lambda: "Thanks" in (t := browser.find_element("id", "status").text) and t
            )
            assert "Error" not in status
        finally:
            browser.quit()
    served = _events(
        kafka_broker.bootstrap,
        settings.topic_interactions,
        PairServed,
        lambda e: e.messages[-1].content == prompt,
    )
    assert len(served) == 1
    pair = served[0]

    def feedback_on_pair(kind: type) -> list[Any]:
        return _events(
            kafka_broker.bootstrap,
            settings.topic_feedback,
            kind,
            lambda e: e.pair_id == pair.pair_id,
        )

    votes = feedback_on_pair(FeedbackPreference)
    assert len(votes) == 1
    # "B" on screen is the answer the event's (canonical) choice names.
    chosen = pair.responses[0 if votes[0].choice == "a" else 1].text
    assert chosen == shown_b != shown_a
    assert votes[0].user_id == pair.user_id
    ids = {r.text: r.response_id for r in pair.responses}
    (rating,) = feedback_on_pair(FeedbackRating)
    assert (rating.response_id, rating.rating) == (ids[shown_a], "up")
    (fix,) = feedback_on_pair(FeedbackCorrection)
    assert (fix.response_id, fix.text) == (ids[shown_b], "A hand-written better answer.")
