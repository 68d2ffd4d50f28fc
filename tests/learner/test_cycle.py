"""Cycle orchestration with fake trainers: gates, publish, version chain, crash + resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from learner import crash_points, metrics
from learner.checkpoint import STAGES, load_checkpoint
from learner.cycle import CycleRunner
from learner.publish import AdapterStore
from learner.settings import LearnerSettings
from learner.store import TrainingStore
from learner.trainers import FakeTrainers
from schemas.manifest import PROMOTED_FILENAME, PromotedRecord
from tests.events import correction, pair, pref
from tests.learner.factories import Feeder, new_store


class Crash(BaseException):
    """Stands in for SIGKILL: not an Exception, so no stage handler can swallow it."""


def fake_model_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(b"weights")
    return path


def make_runner(tmp_path: Path, store: TrainingStore, **overrides: Any) -> CycleRunner:
    settings = LearnerSettings(
        data_dir=str(tmp_path / "data"),
        adapter_store=str(tmp_path / "adapters"),
        model_dir=str(fake_model_dir(tmp_path / "model")),
        trainers="fake",
        publish_to_kafka=False,
        min_new_comparisons=3,
        metrics_port=0,
        **overrides,
    )
    trainers = FakeTrainers(
        settings.reward_config,
        settings.ppo_config,
        settings.sft_config,
        settings.eval_config,
        settings.seed,
    )
    adapters = AdapterStore(settings.adapter_store, settings.adapter_name)
    return CycleRunner(settings, store, adapters, trainers, Path(settings.model_dir))


def feed_votes(feeder: Feeder, start: int, n: int) -> None:
    for i in range(start, start + n):
        feeder.feed(pair(f"p{i}", prompt=f"prompt {i}", t=i), pref(f"p{i}", t=i + 0.5))


@pytest.fixture
def store(tmp_path: Path) -> TrainingStore:
    return new_store(tmp_path)


def test_cycle_publishes_a_complete_version(tmp_path: Path, store: TrainingStore) -> None:
    feed_votes(Feeder(store), 0, 4)
    runner = make_runner(tmp_path, store)
    assert runner.due()
    ckpt = runner.run()
    assert (ckpt.outcome, ckpt.version, ckpt.stage) == ("published", "policy@v1", "done")
    assert runner.adapters.versions() == [1] and runner.adapters.verify(1) == []
    manifest = runner.adapters.manifest(1)
    assert manifest.parent_version is None and manifest.reward_model_version == "reward@v1"
    assert manifest.event_count == 8
    # The PPO config it ran with: the KL stop derived from the budget (0.6 x 10 nats).
    assert manifest.config["ppo_config"] == {"kl_stop": pytest.approx(6.0)}
    assert [(r.topic, r.start, r.end) for r in manifest.offsets] == [
        ("rlhf.feedback", 0, 4),
        ("rlhf.interactions", 0, 4),
    ]
    assert manifest.metrics["reward/accuracy"] == pytest.approx(0.8)
    assert len(manifest.code_revision) >= 7
    assert (tmp_path / "data" / "reward" / "v1" / "adapter_config.json").exists()
    assert list((tmp_path / "data" / "reports").glob("*.png"))
    assert not runner.due()  # nothing new since this cycle
    assert store.cycles(1)[0]["outcome"] == "published"
    # The store records the promotion for replicas that start while Kafka is down.
    promoted = PromotedRecord.model_validate_json(
        (Path(runner.adapters.family) / PROMOTED_FILENAME).read_text()
    )
    assert (promoted.version, promoted.uri) == ("policy@v1", runner.adapters.uri(1))


@pytest.mark.parametrize(
    ("cfg", "gate"),
    [
        (
            {"reward_config": {"fake_accuracy": 0.4}},
            "held-out accuracy 0.400 on 100 votes (min 0.500)",
        ),
        ({"eval_config": {"fake_reward_gain": -0.1}}, "reward gain -0.1000"),
        ({"eval_config": {"fake_kl": 12.0}}, "mean KL 12.0000 > budget 10.0000"),
        ({"eval_config": {"fake_sanity_failures": ["empty answer"]}}, "empty answer"),
    ],
)
def test_failed_gate_keeps_the_candidate_under_rejected(
    tmp_path: Path, store: TrainingStore, cfg: dict[str, Any], gate: str
) -> None:
    feed_votes(Feeder(store), 0, 4)
    runner = make_runner(tmp_path, store, **cfg)
    ckpt = runner.run()
    assert ckpt.outcome == "rejected" and gate in ckpt.reason
    assert runner.adapters.versions() == []
    reason = json.loads((tmp_path / "data/rejected/cycle-1/reason.json").read_text())
    assert gate in reason["reason"]
    assert store.cycles(1)[0]["outcome"] == "rejected"
    assert not runner.due()  # a rejected cycle consumed its trigger too


def test_second_version_chains_from_the_first(tmp_path: Path, store: TrainingStore) -> None:
    feeder = Feeder(store)
    feed_votes(feeder, 0, 3)
    runner = make_runner(tmp_path, store)
    runner.run()
    feed_votes(feeder, 3, 3)
    feeder.feed(correction("p3-r0", "better"))
    assert runner.due()
    ckpt = runner.run()
    assert ckpt.version == "policy@v2" and ckpt.metrics["sft/count"] == 1
    m2 = runner.adapters.manifest(2)
    assert m2.parent_version == "policy@v1"
    assert [(r.start, r.end) for r in m2.offsets] == [(3, 7), (3, 6)]  # 3 votes + 1 correction
    assert m2.event_count == 7
    # PPO started from the SFT adapter, which started from v1.
    trainers = runner.trainers
    assert isinstance(trainers, FakeTrainers)
    assert [name for name, _ in trainers.calls] == [
        "reward",
        "reward-eval",  # the independent member the evaluation scores with
        "ppo",
        "evaluate",
        "sft",
        "reward",
        "reward-eval",
        "ppo",
        "evaluate",
    ]
    assert trainers.calls[5] == ("reward", 6)  # all comparisons so far, not only the new ones


def test_period_trigger_needs_at_least_one_new_comparison(
    tmp_path: Path, store: TrainingStore
) -> None:
    runner = make_runner(tmp_path, store, cycle_period_seconds=10)
    assert not runner.due(now=runner.started_at + 100)
    feed_votes(Feeder(store), 0, 1)
    assert not runner.due(now=runner.started_at + 5)
    assert runner.due(now=runner.started_at + 11)


# Every crash point once the snapshot is taken: a crash there must resume on that snapshot.
AFTER_SNAPSHOT = crash_points.POINTS[crash_points.POINTS.index("cycle.after_snapshot") + 1 :]


@pytest.mark.parametrize("point", AFTER_SNAPSHOT)
def test_crash_at_any_point_resumes_on_the_same_snapshot(
    tmp_path: Path, store: TrainingStore, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    feeder = Feeder(store)
    feed_votes(feeder, 0, 4)

    def crash(at: str) -> None:
        if at == point:
            raise Crash(at)

    monkeypatch.setattr(crash_points, "crash_point", crash)
    runner = make_runner(tmp_path, store)
    with pytest.raises(Crash):
        runner.run()
    snapshot = load_checkpoint(tmp_path / "data")
    assert snapshot is not None and snapshot.stage != "done"
    feed_votes(feeder, 4, 2)  # arrives while the learner is down
    monkeypatch.setattr(crash_points, "crash_point", lambda at: None)
    restarted = make_runner(tmp_path, store)
    assert restarted.pending() is not None
    ckpt = restarted.run()
    assert (ckpt.outcome, ckpt.version) == ("published", "policy@v1")
    assert restarted.adapters.versions() == [1] and restarted.adapters.verify(1) == []
    manifest = restarted.adapters.manifest(1)
    assert manifest.config["store_snapshot"] == snapshot.snapshot  # not the newer events
    assert manifest.event_count == 8
    assert not list(Path(restarted.adapters.family).glob(".tmp-*"))
    # The two events that arrived during the crash go into the next version, once.
    assert restarted.new_comparisons() == 2


def test_a_failing_trainer_rejects_the_cycle_instead_of_looping(
    tmp_path: Path, store: TrainingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed_votes(Feeder(store), 0, 3)
    runner = make_runner(tmp_path, store)

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(runner.trainers, "ppo", boom)
    ckpt = runner.run()
    assert ckpt.outcome == "rejected" and "stage ppo failed" in ckpt.reason
    assert runner.pending() is None


def test_crash_while_rejecting_resumes_to_the_same_decision(
    tmp_path: Path, store: TrainingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed_votes(Feeder(store), 0, 4)

    def crash(at: str) -> None:
        if at == "cycle.before_done":
            raise Crash(at)

    monkeypatch.setattr(crash_points, "crash_point", crash)
    with pytest.raises(Crash):
        make_runner(tmp_path, store, eval_config={"fake_kl": 12.0}).run()
    monkeypatch.setattr(crash_points, "crash_point", lambda at: None)
    runner = make_runner(tmp_path, store, eval_config={"fake_kl": 12.0})
    ckpt = runner.run()
    assert ckpt.outcome == "rejected" and "mean KL 12.0000" in ckpt.reason
    assert (tmp_path / "data/rejected/cycle-1/ppo/adapter/adapter_config.json").exists()
    assert runner.cleanup_workdirs() == 0 and not (tmp_path / "data/cycles/cycle-1").exists()
    assert [c["outcome"] for c in store.cycles()] == ["rejected"]


@pytest.mark.parametrize("mode", ["independent", "same"])
def test_evaluation_scores_with_a_reward_model_ppo_did_not_optimise(
    tmp_path: Path, store: TrainingStore, mode: str
) -> None:
    feed_votes(Feeder(store), 0, 3)
    runner = make_runner(tmp_path, store, eval_reward_model=mode)
    ckpt = runner.run()
    assert ckpt.outcome == "published"
    trainers = runner.trainers
    assert isinstance(trainers, FakeTrainers)
    names = [name for name, _ in trainers.calls]
    if mode == "independent":
        assert names[:2] == ["reward", "reward-eval"]
        assert ckpt.reward_eval_adapter is not None
        assert ckpt.reward_eval_adapter != ckpt.reward_adapter
        assert Path(ckpt.reward_eval_adapter, "adapter_config.json").is_file()
        assert ckpt.metrics["eval/independent_reward_model"] == 1.0
    else:
        assert "reward-eval" not in names and ckpt.reward_eval_adapter is None
        assert ckpt.metrics["eval/independent_reward_model"] == 0.0


def test_manifest_records_the_erasures_honoured(tmp_path: Path, store: TrainingStore) -> None:
    from schemas.events import UserErased
    from tests.events import at

    feeder = Feeder(store)
    feed_votes(feeder, 0, 4)
    feeder.feed(pair("gone", user="erased-user", t=10), pref("gone", user="erased-user", t=11))
    erased = UserErased(user_id="erased-user", requested_by="admin-api", ts=at(12))
    feeder.feed(erased)
    runner = make_runner(tmp_path, store)
    ckpt = runner.run()
    assert ckpt.outcome == "published"
    honoured = runner.adapters.manifest(1).config["erasures_honoured"]
    assert [(e["event_id"], e["user_id"]) for e in honoured] == [(erased.event_id, "erased-user")]
    assert all(c.pair_id != "gone" for c in store.comparisons())


def _gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def _running_stages() -> dict[str, float | None]:
    return {stage: _gauge("rlhf_learner_cycle_stage", stage=stage) for stage in STAGES[:-1]}


def test_metrics_say_how_far_the_next_cycle_is_and_which_stage_runs(
    tmp_path: Path, store: TrainingStore
) -> None:
    feeder = Feeder(store)
    feed_votes(feeder, 0, 2)
    runner = make_runner(tmp_path, store)  # a cycle starts at 3 new comparisons
    assert not runner.due()
    assert _gauge("rlhf_learner_new_comparisons") == 2
    assert _gauge("rlhf_learner_cycle_trigger_comparisons") == 3
    assert set(_running_stages().values()) == {0.0}  # idle: every stage reads 0, none missing

    seen: dict[str, Any] = {}
    train_reward = runner.trainers.reward

    def reward(*args: Any, **kwargs: Any) -> Any:
        metrics.stage_progress(5, 8)  # what the real training loop reports after each step
        seen["stages"] = _running_stages()
        seen["steps"] = (_gauge("rlhf_learner_stage_step"), _gauge("rlhf_learner_stage_steps"))
        return train_reward(*args, **kwargs)

    runner.trainers.reward = reward  # type: ignore[method-assign]
    feed_votes(feeder, 2, 2)
    assert runner.due() and _gauge("rlhf_learner_new_comparisons") == 4
    runner.run()
    assert {stage for stage, on in seen["stages"].items() if on} == {"reward"}
    assert seen["steps"] == (5.0, 8.0)
    assert set(_running_stages().values()) == {0.0}  # the cycle ended: nothing runs
    assert _gauge("rlhf_learner_stage_steps") == 0
    runner.due()
    assert _gauge("rlhf_learner_new_comparisons") == 0  # counted from the new snapshot


@pytest.mark.parametrize(("per_step", "steps"), [(1, 6), (2, 3), (32, 2), (0, 4)])
def test_ppo_iterations_follow_the_new_comparisons(
    tmp_path: Path, store: TrainingStore, per_step: int, steps: int
) -> None:
    feed_votes(Feeder(store), 0, 6)
    runner = make_runner(tmp_path, store, ppo_comparisons_per_step=per_step, ppo_min_steps=2)
    ckpt = runner.run()
    # 6 new comparisons: one iteration per `per_step` of them, at least 2; 0 = the configured
    # count (the fake trainer's 4).
    assert len(ckpt.history["ppo"]) == steps


def test_a_cycle_moves_its_duration_outcome_accuracy_and_kl_metrics(
    tmp_path: Path, store: TrainingStore
) -> None:
    feed_votes(Feeder(store), 0, 4)
    cycles = _gauge("rlhf_learner_cycle_duration_seconds_count") or 0.0
    reward_stages = _gauge("rlhf_learner_stage_duration_seconds_count", stage="reward") or 0.0
    published = _gauge("rlhf_learner_cycles_total", outcome="published") or 0.0
    metrics.LAST_RM_ACCURACY.set(-1.0)
    metrics.LAST_KL.set(-1.0)
    ckpt = make_runner(tmp_path, store, eval_config={"fake_kl": 3.5}).run()
    assert ckpt.outcome == "published"
    assert _gauge("rlhf_learner_cycle_duration_seconds_count") == cycles + 1
    assert _gauge("rlhf_learner_stage_duration_seconds_count", stage="reward") == reward_stages + 1
    assert _gauge("rlhf_learner_cycles_total", outcome="published") == published + 1
    assert _gauge("rlhf_learner_reward_model_accuracy_ratio") == pytest.approx(
        ckpt.metrics["reward/accuracy"]
    )
    assert _gauge("rlhf_learner_policy_kl_nats") == pytest.approx(3.5)


# 55 of 100 held-out votes: neither better nor worse than chance at 95 % (Wilson fallback).
UNCERTAIN = {"fake_accuracy": 0.55}


def _canary_rows(store: TrainingStore) -> list[tuple[str, int]]:
    return store.conn.execute("SELECT version, guarded FROM canaries").fetchall()


def _trained(runner: CycleRunner) -> list[str]:
    trainers = runner.trainers
    assert isinstance(trainers, FakeTrainers)
    return [name for name, _ in trainers.calls]


@pytest.mark.parametrize(
    "reward_config", [UNCERTAIN, {"fake_accuracy": 0.7, "fake_signed_rank_z": 1.2}]
)
def test_an_uncertain_reward_model_goes_on_to_a_guarded_canary(
    tmp_path: Path, store: TrainingStore, reward_config: dict[str, float]
) -> None:
    feed_votes(Feeder(store), 0, 4)
    runner = make_runner(tmp_path, store, canary=True, reward_config=reward_config)
    ckpt = runner.run()
    assert (ckpt.outcome, ckpt.version, ckpt.guarded) == ("published", "policy@v1", True)
    assert ckpt.reason == "published policy@v1 as a guarded canary"
    assert _trained(runner) == ["reward", "reward-eval", "ppo", "evaluate"]
    assert _canary_rows(store) == [("policy@v1", 1)]
    assert runner.adapters.manifest(1).config["gates"]["guarded"] is True
    assert "reward_eval/accuracy" in ckpt.metrics  # the judge's held-out figures, as ever


def test_a_certified_reward_model_starts_an_ordinary_canary(
    tmp_path: Path, store: TrainingStore
) -> None:
    feed_votes(Feeder(store), 0, 4)
    runner = make_runner(tmp_path, store, canary=True)  # the fake's 0.8 of 100 is certified
    ckpt = runner.run()
    assert (ckpt.outcome, ckpt.guarded) == ("published", False)
    assert _canary_rows(store) == [("policy@v1", 0)]


@pytest.mark.parametrize(
    ("overrides", "missing"),
    [
        ({"canary": False}, "LEARNER_CANARY=true"),
        ({"canary": True, "rm_gate_uncertain": "reject"}, "LEARNER_RM_GATE_UNCERTAIN=canary"),
        ({"canary": True, "eval_reward_model": "same"}, "LEARNER_EVAL_REWARD_MODEL=independent"),
    ],
)
def test_an_uncertain_reward_model_is_rejected_where_no_guarded_canary_can_judge_it(
    tmp_path: Path, store: TrainingStore, overrides: dict[str, Any], missing: str
) -> None:
    feed_votes(Feeder(store), 0, 4)
    runner = make_runner(tmp_path, store, reward_config=UNCERTAIN, **overrides)
    ckpt = runner.run()
    assert ckpt.outcome == "rejected" and not ckpt.guarded
    assert "held-out accuracy 0.550 on 100 votes" in ckpt.reason
    assert "goes to a guarded canary only with the canary on" in ckpt.reason
    assert f"missing: {missing})" in ckpt.reason
    assert _trained(runner) == ["reward"] and runner.adapters.versions() == []


def test_a_guarded_cycle_is_rejected_when_the_independent_member_is_worse_than_chance(
    tmp_path: Path, store: TrainingStore
) -> None:
    feed_votes(Feeder(store), 0, 4)
    cfg = UNCERTAIN | {"fake_independent_accuracy": 0.3}
    runner = make_runner(tmp_path, store, canary=True, reward_config=cfg)
    ckpt = runner.run()
    assert ckpt.outcome == "rejected"
    assert ckpt.reason.startswith("independent reward model: held-out accuracy 0.300")
    assert "worse than chance" in ckpt.reason
    assert ckpt.metrics["reward_eval/accuracy"] == pytest.approx(0.3)
    assert _trained(runner) == ["reward", "reward-eval"] and _canary_rows(store) == []


def test_an_uncertain_independent_member_does_not_stop_a_guarded_cycle(
    tmp_path: Path, store: TrainingStore
) -> None:
    feed_votes(Feeder(store), 0, 4)
    cfg = UNCERTAIN | {"fake_independent_accuracy": 0.45}
    ckpt = make_runner(tmp_path, store, canary=True, reward_config=cfg).run()
    assert (ckpt.outcome, ckpt.guarded) == ("published", True)


@pytest.mark.parametrize(
    "reward_config",
    [{"fake_accuracy": 0.49}, {"fake_accuracy": 0.6, "fake_signed_rank_z": -0.3}],
)
def test_an_uncertain_reward_model_whose_votes_lean_against_it_is_rejected(
    tmp_path: Path, store: TrainingStore, reward_config: dict[str, float]
) -> None:
    feed_votes(Feeder(store), 0, 4)
    runner = make_runner(tmp_path, store, canary=True, reward_config=reward_config)
    ckpt = runner.run()
    assert ckpt.outcome == "rejected" and not ckpt.guarded
    assert "lean against it" in ckpt.reason
    assert _trained(runner) == ["reward"] and _canary_rows(store) == []


def test_a_contradicted_reward_model_is_rejected_even_with_the_canary_on(
    tmp_path: Path, store: TrainingStore
) -> None:
    feed_votes(Feeder(store), 0, 4)
    cfg = {"fake_accuracy": 0.7, "fake_signed_rank_z": -2.0}
    runner = make_runner(tmp_path, store, canary=True, reward_config=cfg)
    ckpt = runner.run()
    assert ckpt.outcome == "rejected" and "signed-rank z -2.00 < -1.64" in ckpt.reason
    assert _trained(runner) == ["reward"]


def test_a_guarded_cycle_still_answers_to_the_evaluation_gates(
    tmp_path: Path, store: TrainingStore
) -> None:
    feed_votes(Feeder(store), 0, 4)
    runner = make_runner(
        tmp_path,
        store,
        canary=True,
        reward_config=UNCERTAIN,
        eval_config={"fake_reward_gain": -0.1},
    )
    ckpt = runner.run()
    assert ckpt.outcome == "rejected" and "reward gain -0.1000" in ckpt.reason
    assert ckpt.guarded and _canary_rows(store) == []


def test_a_checkpoint_from_before_the_guarded_flag_loads_unguarded(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    old = {"cycle_id": 3, "stage": "ppo", "snapshot": {"max_seq": 5, "positions": []}}
    (data / "checkpoint.json").write_text(json.dumps(old))
    ckpt = load_checkpoint(data)
    assert ckpt is not None and ckpt.stage == "ppo" and ckpt.guarded is False


def test_an_uncertain_reward_model_is_counted_as_uncertain(
    tmp_path: Path, store: TrainingStore
) -> None:
    def uncertain() -> float:
        labels = {"gate": "reward_accuracy", "outcome": "uncertain"}
        return REGISTRY.get_sample_value("rlhf_learner_gate_outcomes_total", labels) or 0.0

    before = uncertain()
    feed_votes(Feeder(store), 0, 4)
    make_runner(tmp_path, store, canary=True, reward_config=UNCERTAIN).run()
    assert uncertain() == before + 1


def test_a_guarded_cycle_resumed_with_the_canary_off_is_not_published(
    tmp_path: Path, store: TrainingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed_votes(Feeder(store), 0, 4)

    def crash(at: str) -> None:
        if at == "cycle.after_evaluate":
            raise Crash(at)

    monkeypatch.setattr(crash_points, "crash_point", crash)
    with pytest.raises(Crash):
        make_runner(tmp_path, store, canary=True, reward_config=UNCERTAIN).run()
    monkeypatch.setattr(crash_points, "crash_point", lambda at: None)
    runner = make_runner(tmp_path, store, canary=False, reward_config=UNCERTAIN)
    ckpt = runner.run()
    assert ckpt.outcome == "rejected" and "the canary is now off" in ckpt.reason
    assert runner.adapters.versions() == []
