"""``learner`` CLI: every command has --help, flags override env, status works offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from learner.cli import build_parser, main, settings_from
from tests.learner.factories import Feeder, new_store, pair, pref


@pytest.mark.parametrize("command", ["run", "sft", "train-reward", "ppo", "status"])
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "--data-dir" in capsys.readouterr().out


def test_flags_override_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LEARNER_MIN_NEW_COMPARISONS", "7")
    monkeypatch.setenv("LEARNER_DATA_DIR", "/env/dir")
    args = build_parser().parse_args(["run", "--data-dir", str(tmp_path)])
    settings = settings_from(args)
    assert settings.data_dir == str(tmp_path) and settings.min_new_comparisons == 7


def test_invalid_flag_value_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--kafka-bootstrap", "no-port"]) == 2
    assert "kafka_bootstrap" in capsys.readouterr().err


def test_status_reports_store_and_survives_a_missing_broker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = new_store(tmp_path / "data")
    feeder = Feeder(store)
    feeder.feed(pair("p1"), pref("p1"))
    feeder.feed_raw("rlhf.feedback", b"{bad")
    store.close()
    argv = [
        "status",
        "--data-dir",
        str(tmp_path / "data"),
        "--adapter-store",
        str(tmp_path / "adapters"),
        "--kafka-bootstrap",
        "127.0.0.1:1",
    ]
    assert main([*argv, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["store"]["votes"] == 1 and info["comparisons"] == 1
    assert info["counters"]["decode_errors"] == {"malformed_json": 1}
    assert info["lag"].startswith("broker unreachable")
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "rlhf.interactions[0]" in text and "published: none" in text
