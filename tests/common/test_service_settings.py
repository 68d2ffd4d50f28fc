"""Both services validate their settings at start-up with a clear message per bad value."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from common.settings_checks import check_bootstrap_servers
from learner.settings import LearnerSettings
from serving.settings import ServingSettings


def test_defaults_are_valid_and_env_prefixed(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SERVING_PORT", "8123")
    monkeypatch.setenv("LEARNER_MIN_NEW_COMPARISONS", "7")
    assert ServingSettings().port == 8123
    assert LearnerSettings().min_new_comparisons == 7


def _assert_refused_from_env(
    monkeypatch: pytest.MonkeyPatch,
    settings_class: type[BaseSettings],
    env: dict[str, str],
    message: str,
) -> None:
    """The settings class, read from ``env``, fails validation with ``message``."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match=message):
        settings_class()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SERVING_ENGINE": "tpu"}, "engine"),
        ({"SERVING_MODEL_DIR": "/no/such/model"}, "does not exist"),
        ({"SERVING_KAFKA_BOOTSTRAP": "localhost"}, "not host:port"),
        ({"SERVING_KAFKA_BOOTSTRAP": "h:99999"}, "port must be"),
        ({"SERVING_REQUIRE_AUTH": "true"}, "SERVING_API_KEYS is empty"),
        ({"SERVING_REQUIRE_AUTH": "true", "SERVING_API_KEYS": '["k1"]'}, "real secret"),
        ({"SERVING_PORT": "0"}, "port"),
    ],
)
def test_serving_refuses_bad_values_clearly(monkeypatch, env, message):
    _assert_refused_from_env(monkeypatch, ServingSettings, env, message)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LEARNER_KAFKA_BOOTSTRAP": "kafka"}, "not host:port"),
        ({"LEARNER_MODEL_DIR": "/no/such/model"}, "does not exist"),
        ({"LEARNER_TOPIC_FEEDBACK": "rlhf.interactions"}, "must differ"),
        ({"LEARNER_DISTRIBUTED": "zero3"}, "ddp"),
        ({"LEARNER_DISTRIBUTED": "fsdp"}, "LEARNER_TRAIN_LAUNCHER to one"),
        (
            {
                "LEARNER_DISTRIBUTED": "fsdp",
                "LEARNER_TRAIN_LAUNCHER": "accelerate launch --multi_gpu --num_processes 4",
            },
            "drop .*--multi_gpu",
        ),
    ],
)
def test_learner_refuses_bad_values_clearly(monkeypatch, env, message):
    _assert_refused_from_env(monkeypatch, LearnerSettings, env, message)


def test_model_dir_that_is_not_a_model_is_refused(tmp_path):
    with pytest.raises(ValidationError, match=r"config\.json"):
        ServingSettings(model_dir=str(tmp_path))


def test_bootstrap_list_is_normalised():
    assert (
        check_bootstrap_servers(" a:1, b.example:9092 ,[::1]:9093")
        == "a:1,b.example:9092,[::1]:9093"
    )


@pytest.mark.parametrize("service", ["serving", "learner"])
def test_both_services_refuse_one_topic_for_two_kinds(service: str) -> None:
    cls: type[ServingSettings] | type[LearnerSettings] = (
        ServingSettings if service == "serving" else LearnerSettings
    )
    with pytest.raises(ValueError, match="topics must differ"):
        cls(topic_adapters="rlhf.feedback")
    assert cls().topics().all() == ["rlhf.interactions", "rlhf.feedback", "rlhf.adapters"]
