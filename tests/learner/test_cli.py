"""``learner`` CLI: every command has --help, flags override env, status works offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from learner.cli import build_parser, main, settings_from
from tests.events import pair, pref
from tests.learner.factories import Feeder, new_store


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


def _fake_flags(tmp_path: Path) -> list[str]:
    from tests.learner.test_cycle import fake_model_dir

    return [
        "--data-dir",
        str(tmp_path / "data"),
        "--adapter-store",
        str(tmp_path / "adapters"),
        "--model-dir",
        str(fake_model_dir(tmp_path / "model")),
        "--trainers",
        "fake",
    ]


def test_sft_from_jsonl_and_publish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LEARNER_PUBLISH_TO_KAFKA", "false")
    jsonl = tmp_path / "demos.jsonl"
    chat = {
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"}]
    }
    jsonl.write_text(json.dumps(chat) + "\n\n" + json.dumps(chat) + "\n")
    assert main(["sft", "--jsonl", str(jsonl), "--publish", *_fake_flags(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert '"count": 2.0' in out and "published policy@v1" in out
    from learner.publish import AdapterStore

    store = AdapterStore(str(tmp_path / "adapters"), "policy")
    assert store.versions() == [1] and store.verify(1) == []
    assert store.manifest(1).config["manual"] is True


def test_train_reward_and_ppo_commands_use_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = new_store(tmp_path / "data")
    Feeder(store).feed(pair("p1"), pref("p1"), pair("p2", prompt="yo"), pref("p2", choice="b"))
    store.close()
    flags = _fake_flags(tmp_path)
    assert main(["train-reward", *flags]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["metrics"]["train_count"] == 2 and result["passes_gate"] is True
    assert result["gate_outcome"] == "certified"
    assert (
        main(["ppo", "--reward-adapter", result["adapter_dir"], "--num-prompts", "1", *flags]) == 0
    )
    assert Path(json.loads(capsys.readouterr().out)["adapter_dir"]).is_dir()


def test_ppo_command_runs_the_steps_asked_on_training_prompts_and_publishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from learner.publish import AdapterStore
    from learner.store.queries import is_heldout

    monkeypatch.setenv("LEARNER_PUBLISH_TO_KAFKA", "false")
    store = new_store(tmp_path / "data")
    feeder = Feeder(store)
    for i in range(20):
        feeder.feed(pair(f"p{i}", prompt=f"question {i}"))
    prompts = store.prompts()
    store.close()
    held = [p for p in prompts if is_heldout(p, 0.2)]
    assert 0 < len(held) < len(prompts)  # the split has both sides
    flags = _fake_flags(tmp_path)
    reward = tmp_path / "rm"
    reward.mkdir()
    argv = ["ppo", "--reward-adapter", str(reward), "--steps", "3", "--publish", *flags]
    assert main([*argv, "--num-prompts", "100"]) == 0
    out = capsys.readouterr().out
    assert "published policy@v1" in out
    result = json.loads(out[: out.rindex("}") + 1])
    assert result["metrics"]["step"] == 3.0  # the fake PPO ran the 3 steps asked for
    manifest = AdapterStore(str(tmp_path / "adapters"), "policy").manifest(1)
    assert manifest.config["manual"] is True and manifest.config["ppo_init"] == "base"
    assert result["metrics"]["prompts"] == len(prompts) - len(held)  # no held-out prompt


def test_sft_without_demonstrations_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sft", *_fake_flags(tmp_path)]) == 1
    assert "no demonstrations" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("command", "trainers", "expected"),
    [
        ("run", "real", 4),
        ("ppo", "real", 4),
        ("train-reward", "real", 4),
        ("sft", "real", 4),
        ("status", "real", None),
        ("erase", "real", None),
        ("run", "fake", None),
    ],
)
def test_commands_that_train_set_torch_threads(
    monkeypatch: pytest.MonkeyPatch, command: str, trainers: str, expected: int | None
) -> None:
    import common.cpu_budget
    from learner.cli import configure_threads
    from learner.settings import LearnerSettings

    seen: list[int] = []

    def configure(setting: int) -> int:
        seen.append(setting)
        return setting

    monkeypatch.setattr(common.cpu_budget, "configure_torch_threads", configure)
    settings = LearnerSettings(torch_threads=4, trainers=trainers)
    assert configure_threads(settings, command) == expected
    assert seen == ([4] if expected else [])
