"""Learner settings: one pydantic-settings class, env prefix ``LEARNER_``, validated at start-up."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.settings_checks import check_bootstrap_servers, check_model_dir


class LearnerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LEARNER_", extra="forbid")

    model_dir: str = Field("embedded", description="'embedded' (SmolLM2-135M) or a local model dir")
    device: str = Field("cpu", description="torch device")
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="host:port[,host:port]")
    topic_interactions: str = "rlhf.interactions"
    topic_feedback: str = "rlhf.feedback"
    topic_adapters: str = "rlhf.adapters"
    data_dir: str = Field("var/learner", description="training store, checkpoints, reports")
    adapter_store: str = Field("var/adapters", description="adapter store: directory or fsspec URL")
    adapter_name: str = Field("policy", description="adapter family to train and publish")
    min_new_comparisons: int = Field(64, ge=1, description="start a cycle after this many new "
                                     "comparisons ...")
    cycle_period_seconds: float = Field(3600.0, gt=0, description="... or after this long with "
                                        "at least one new comparison")
    feedback_join_window_seconds: float = Field(3600.0, gt=0, description="how long feedback "
                                                "waits for its pair before it expires")
    rm_min_accuracy: float = Field(0.55, ge=0.0, le=1.0, description="held-out accuracy gate")
    kl_budget: float = Field(0.5, gt=0, description="max mean KL(policy||reference) per response")
    metrics_port: int = Field(9100, ge=0, le=65535, description="Prometheus port; 0 = off")
    seed: int = 0

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap(cls, value: str) -> str:
        return check_bootstrap_servers(value)

    @field_validator("model_dir")
    @classmethod
    def _model_dir(cls, value: str) -> str:
        return check_model_dir(value)

    @model_validator(mode="after")
    def _topics_distinct(self) -> LearnerSettings:
        topics = [self.topic_interactions, self.topic_feedback, self.topic_adapters]
        if len(set(topics)) != len(topics):
            raise ValueError("the interactions, feedback and adapters topics must differ")
        return self
