"""Renamed serving settings: the old environment name is still read for one release, and
serving logs a deprecation warning at start-up when it is set."""

from __future__ import annotations

import logging

import pytest

from serving.app import create_app
from serving.settings import ServingSettings, warn_deprecated_env

BASE_ENV = {"SERVING_ENGINE": "fake", "SERVING_KAFKA_ENABLED": "false"}


def _env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name, value in {**BASE_ENV, **values}.items():
        monkeypatch.setenv(name, value)


def test_the_old_pair_fraction_name_still_sets_the_unrequested_pair_share(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _env(monkeypatch, SERVING_PAIR_FRACTION="0.25")
    assert ServingSettings().unrequested_pair_share == 0.25


def test_the_new_name_sets_it_and_wins_over_the_old(monkeypatch: pytest.MonkeyPatch) -> None:
    _env(monkeypatch, SERVING_UNREQUESTED_PAIR_SHARE="0.5")
    assert ServingSettings().unrequested_pair_share == 0.5
    monkeypatch.setenv("SERVING_PAIR_FRACTION", "0.25")
    assert ServingSettings().unrequested_pair_share == 0.5


def test_the_field_name_still_sets_it_in_code() -> None:
    settings = ServingSettings(engine="fake", unrequested_pair_share=0.75)
    assert settings.unrequested_pair_share == 0.75


def test_start_up_warns_when_the_old_name_is_used(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _env(monkeypatch, SERVING_PAIR_FRACTION="0.25")
    with caplog.at_level(logging.WARNING, logger="serving.settings"):
        create_app()
    warnings = [r.getMessage() for r in caplog.records if r.name == "serving.settings"]
    assert warnings == [
        "SERVING_PAIR_FRACTION is deprecated and will be removed in the next release; "
        "set SERVING_UNREQUESTED_PAIR_SHARE instead"
    ]


def test_no_warning_without_old_names() -> None:
    assert warn_deprecated_env({"SERVING_UNREQUESTED_PAIR_SHARE": "0.5"}) == []
    assert warn_deprecated_env({"serving_pair_fraction": "0.5"}) == ["SERVING_PAIR_FRACTION"]
