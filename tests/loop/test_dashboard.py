"""The demo's dashboard: fits the default 80x24 terminal with the adapters on screen, grows with
the terminal, shows "-" for figures that do not exist yet, and reads the learner's progress from
the metrics the learner really exports."""

from __future__ import annotations

import io
from typing import Any

import pytest
from prometheus_client import generate_latest
from rich.cells import cell_len
from rich.console import Console

from learner import metrics as learner_metrics
from learner.checkpoint import STAGES
from loop.dashboard import (
    Dashboard,
    Observation,
    comparisons_toward_cycle,
    outlook,
    render_text,
    running_stage,
)
from loop.monitor import AdapterEvent, parse_metrics

BUSY_LEARNER = {
    "rlhf_learner_new_comparisons": 23.0,
    "rlhf_learner_cycle_trigger_comparisons": 64.0,
    'rlhf_learner_cycle_stage{stage="reward"}': 0.0,
    'rlhf_learner_cycle_stage{stage="ppo"}': 0.0,
    'rlhf_learner_cycles_total{outcome="published"}': 2.0,
    'rlhf_learner_cycles_total{outcome="rejected"}': 1.0,
    'rlhf_learner_stage_duration_seconds_count{stage="reward"}': 3.0,
    'rlhf_learner_stage_duration_seconds_count{stage="evaluate"}': 2.0,
    'rlhf_learner_gate_outcomes_total{gate="kl",outcome="pass"}': 2.0,
    'rlhf_learner_events_consumed_total{kind="pair.served",topic="rlhf.interactions"}': 130.0,
    "rlhf_learner_cycle_duration_seconds_count": 3.0,
    "rlhf_learner_cycle_duration_seconds_sum": 1800.0,
    "rlhf_learner_reward_model_accuracy_ratio": 0.61,
    "rlhf_learner_policy_kl_nats": 3.2,
}


def _busy(**changes: Any) -> Observation:
    """A demo an hour in: two versions published, three serving answers, a learner between
    cycles."""
    sim = {
        "pairs": 130,
        "votes": {"choice": 120, "tie": 8},
        "feedback_ok": {"preference": 128, "rating": 12, "correction": 6},
        "feedback_failed": {},
        "errors": {},
        "answers_by_version": {
            "base": {"answers": 200, "mean_words": 44.6, "mean_utility": -1.8},
            "policy@v1": {"answers": 40, "mean_words": 27.3, "mean_utility": -1.1},
            "policy@v2": {"answers": 20, "mean_words": 20.3, "mean_utility": -0.9},
        },
        "head_to_head": {"base vs policy@v1": {"score_first": 3.0, "n": 8}},
    }
    fields: dict[str, Any] = {
        "preference": "loop.preferences:concise",
        "elapsed": 3600.0,
        "sim": sim,
        "serving_metrics": {
            "rlhf_serving_pairs_served_total": 130.0,
            'rlhf_serving_events_produced_total{topic="rlhf.feedback"}': 146.0,
        },
        "learner_metrics": dict(BUSY_LEARNER),
        "adapters": {"serving_version": "policy@v2", "canary_version": None},
        "adapter_events": [
            AdapterEvent("adapter.published", "policy@v1", "t1"),
            AdapterEvent("adapter.published", "policy@v2", "t2"),
        ],
        "learner_state": "running",
        "eval_line": "policy@v2: win rate 0.75 [0.41, 0.93] n=8; words 20 vs 44",
        "root": "http://127.0.0.1:40123",
        "data_dir": "/srv/rlhf/var/demo/run-20261201-100000",
        "cycle_comparisons": 64,
        "expected_cycle_seconds": 1800.0,
    }
    return Observation(**(fields | changes))


def _empty() -> Observation:
    """Just started: serving not answering yet, no learner metrics, no votes."""
    return Observation(
        "concise",
        2.0,
        {},
        {},
        {},
        None,
        [],
        "running",
        "",
        root="http://127.0.0.1:40123",
        data_dir="/srv/rlhf/var/demo/run-1",
        cycle_comparisons=64,
        expected_cycle_seconds=1800.0,
    )


def _draw(obs: Observation, width: int, height: int) -> list[str]:
    out = io.StringIO()
    console = Console(width=width, height=height, file=out, force_terminal=True, color_system=None)
    console.print(Dashboard(obs))
    return out.getvalue().splitlines()


def test_default_terminal_shows_the_adapters_and_the_way_to_the_next_one() -> None:
    lines = _draw(_busy(), 80, 24)
    text = "\n".join(lines)
    assert len(lines) <= 24, text
    assert max(cell_len(line) for line in lines) <= 80, text
    for wanted in (
        "chat API http://127.0.0.1:40123/v1",
        "voting page http://127.0.0.1:40123/",
        "data and logs /srv/rlhf/var/demo/run-20261201-100000",
        "adapters",
        "serving version    policy@v2",
        "published          policy@v1, policy@v2",
        "answers base",
        "answers policy@v2",  # the newest version: what the demo is about
        "eval vs base       policy@v2: win rate 0.75",
        "next cycle         23 / 64 comparisons",
        "learner            running · idle",
    ):
        assert wanted in text, (wanted, text)
    assert lines[-1].startswith("╰")  # the frame is whole: nothing cut off below


def test_a_larger_terminal_shows_everything() -> None:
    lines = _draw(_busy(), 120, 50)
    text = "\n".join(lines)
    assert len(lines) <= 50
    # Rows the 80x24 view leaves out for lack of lines are all here.
    small = "\n".join(_draw(_busy(), 80, 24))
    for wanted in ("answers policy@v1", "gates", "stages done", "learner consumed"):
        assert wanted in text and wanted not in small, wanted
    assert "feedback accepted  correction=6 preference=128 rating=12 · refused 0" in text


def test_a_long_running_demo_still_fits() -> None:
    versions = {
        f"policy@v{n}": {"answers": n, "mean_words": 20.0, "mean_utility": -1.0}
        for n in range(1, 13)
    }
    obs = _busy()
    obs.sim["answers_by_version"] |= versions
    obs.adapter_events.extend(AdapterEvent("adapter.published", v, "t") for v in versions)
    for width, height in ((80, 24), (100, 30)):
        lines = _draw(obs, width, height)
        text = "\n".join(lines)
        assert len(lines) <= height and "answers policy@v12" in text, text
        assert "published          policy@v10, policy@v11, policy@v12 (+" in text


def test_figures_that_do_not_exist_yet_show_a_dash() -> None:
    text = "\n".join(_draw(_empty(), 80, 24))
    assert "serving version    - (serving not answering)" in text
    assert "next cycle         - / 64 comparisons" in text
    assert "accuracy - · KL - nats" in text
    assert "serving counts -" in text
    assert "0.000" not in text
    # The learner's gauges read 0 before the stage that sets them ran: still no figure.
    fresh = _busy(
        learner_metrics={
            "rlhf_learner_reward_model_accuracy_ratio": 0.0,
            "rlhf_learner_policy_kl_nats": 0.0,
        }
    )
    assert "accuracy - · KL - nats" in render_text(fresh)
    assert "accuracy 0.610 · KL 3.200 nats" in render_text(_busy())


def test_outlook_estimates_the_first_adapter_from_the_vote_rate() -> None:
    obs = _busy(
        elapsed=600.0,
        adapter_events=[],
        learner_metrics={
            "rlhf_learner_new_comparisons": 40.0,
            "rlhf_learner_cycle_trigger_comparisons": 64.0,
        },
    )
    obs.sim["feedback_ok"] = {"preference": 40}  # 4 votes a minute
    assert outlook(obs) == (
        "first adapter ≈ 36 min: 24 comparisons to go (≈ 6 min) + a cycle (≈ 30 min)"
    )
    # Once the learner finished a cycle (rejected by a gate), its own time replaces the guess.
    obs.learner_metrics |= {
        "rlhf_learner_cycle_duration_seconds_count": 1.0,
        "rlhf_learner_cycle_duration_seconds_sum": 600.0,
        'rlhf_learner_cycles_total{outcome="rejected"}': 1.0,
    }
    assert outlook(obs) == (
        "first adapter ≈ 16 min: 24 comparisons to go (≈ 6 min) + a cycle (≈ 10 min) "
        "(1 cycle(s) rejected so far)"
    )
    assert outlook(_empty()) == (
        "first adapter: after 64 more comparisons and a learner cycle (≈ 30 min)"
    )
    assert outlook(_busy()).startswith("2 adapter(s) published, latest policy@v2")


@pytest.fixture
def learner_registry() -> Any:
    yield
    learner_metrics.set_running_stage(None, STAGES[:-1])


def test_reads_what_the_learner_exports(learner_registry: Any) -> None:
    """The learner's own gauges, exported and parsed as the demo scrapes them."""
    learner_metrics.CYCLE_TRIGGER.set(64)
    learner_metrics.NEW_COMPARISONS.set(23)
    learner_metrics.set_running_stage("ppo", STAGES[:-1])
    learner_metrics.stage_progress(3, 8)
    scraped = parse_metrics(generate_latest().decode())
    assert running_stage(scraped) == "ppo step 3/8"
    assert comparisons_toward_cycle(_busy(learner_metrics=scraped)) == (23, 64)
    text = "\n".join(_draw(_busy(learner_metrics=scraped), 80, 24))
    assert "learner            running · training: ppo step 3/8" in text
    learner_metrics.set_running_stage(None, STAGES[:-1])
    assert running_stage(parse_metrics(generate_latest().decode())) == ""


def test_a_running_canary_shows_its_votes_and_interval_at_80x24() -> None:
    learner = dict(BUSY_LEARNER) | {
        "rlhf_learner_canary_decisive_votes": 37.0,
        "rlhf_learner_canary_win_rate_low": 0.41,
        "rlhf_learner_canary_win_rate_high": 0.83,
    }
    obs = _busy(
        learner_metrics=learner,
        adapters={"serving_version": "policy@v1", "canary_version": "policy@v2"},
    )
    lines = _draw(obs, 80, 24)
    assert len(lines) <= 24
    assert any("canary" in line and "37 votes" in line and "[0.41, 0.83]" in line for line in lines)
    # Decided and none running: the tally of decisions instead.
    done = dict(BUSY_LEARNER) | {
        'rlhf_learner_canary_decisions_total{outcome="promoted"}': 2.0,
    }
    text = render_text(_busy(learner_metrics=done))
    assert "none running" in text and "promoted=2" in text
    assert "canary" not in render_text(_busy())  # canaries off: no row
