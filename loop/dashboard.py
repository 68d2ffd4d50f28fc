"""Terminal dashboard of the running loop: a ``rich`` view that fits the terminal, or a plain text
block printed periodically. Rendering only: the numbers come in an :class:`Observation`
(gathered by :meth:`loop.demo.Demo.observe`).

Each row has a priority. The rich view shows as many rows as the terminal has lines, dropping
the least important first, so at the default 80x24 the adapters (the point of the demo) and the
learner's progress toward the next one are always on screen, and a taller terminal shows
everything. A figure that does not exist yet (no reward model trained, serving not answering)
shows as "-", never as 0.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loop.monitor import AdapterEvent, metric_labels, metric_sum
from schemas.versions import BASE, AdapterVersion

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult


@dataclass
class Observation:
    """One look at the running loop (:meth:`loop.demo.Demo.observe`), all this view renders."""

    preference: str
    elapsed: float
    sim: dict[str, Any]
    serving_metrics: dict[str, float]
    learner_metrics: dict[str, float]
    adapters: dict[str, Any] | None
    adapter_events: list[AdapterEvent]
    learner_state: str
    eval_line: str
    root: str = ""  # serving's root URL
    data_dir: str = ""
    cycle_comparisons: int = 0  # what the demo asked for, until the learner reports its own
    expected_cycle_seconds: float = 0.0  # until the learner finished a cycle


# Lower is more important; rows above the cut-off are dropped when the terminal is short.
ALWAYS, HIGH, MEDIUM, LOW, LEAST = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class Row:
    label: str
    value: str
    priority: int = MEDIUM


Section = tuple[str, list[Row]]


# ---- the figures ----------------------------------------------------------------------------


def header_lines(obs: Observation) -> list[str]:
    """Where to look and what to expect: shown above every section and never dropped."""
    lines = []
    if obs.root:
        lines.append(f"chat API {obs.root}/v1 · voting page {obs.root}/")
    if obs.data_dir:
        lines.append(f"data and logs {display_path(obs.data_dir)}")
    lines.append(outlook(obs))
    return lines


def display_path(path: str) -> str:
    """Relative to the working directory when under it: shorter, and what the user typed."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def outlook(obs: Observation) -> str:
    """Before the first adapter: when to expect it. After: which one serves."""
    published = _published(obs)
    if published:
        serving = (obs.adapters or {}).get("serving_version") or "-"
        return f"{len(published)} adapter(s) published, latest {published[-1]}; serving {serving}"
    learner = obs.learner_metrics
    cycle = cycle_seconds(obs)
    rejected = metric_sum(learner, "rlhf_learner_cycles_total", outcome="rejected")
    note = f" ({rejected:.0f} cycle(s) rejected so far)" if rejected else ""
    stage = running_stage(learner)
    if stage:
        return f"first adapter: a cycle is training ({stage}); a cycle takes ≈ {duration(cycle)}"
    have, needed = comparisons_toward_cycle(obs)
    rate = comparison_rate(obs)
    remaining = max(0, needed - (have or 0))
    if rate is None:
        return (
            f"first adapter: after {remaining} more comparisons and a learner cycle "
            f"(≈ {duration(cycle)}){note}"
        )
    collect = remaining / rate
    return (
        f"first adapter ≈ {duration(collect + cycle)}: {remaining} comparisons to go "
        f"(≈ {duration(collect)}) + a cycle (≈ {duration(cycle)}){note}"
    )


def first_adapter_estimate(needed: int, cycle: float) -> str:
    """The outlook before anything ran (no rate known yet), for the demo's start-up lines."""
    return f"first adapter: after {needed} comparisons and a learner cycle (≈ {duration(cycle)})"


def cycle_seconds(obs: Observation) -> float:
    """The learner's own mean cycle time once it finished one, else the demo's expectation."""
    learner = obs.learner_metrics
    count = learner.get("rlhf_learner_cycle_duration_seconds_count", 0.0)
    if count:
        return learner.get("rlhf_learner_cycle_duration_seconds_sum", 0.0) / count
    return obs.expected_cycle_seconds


def comparison_rate(obs: Observation) -> float | None:
    """Accepted pairwise votes per second so far; None before the first one."""
    votes = obs.sim.get("feedback_ok", {}).get("preference", 0)
    if not votes or obs.elapsed <= 0:
        return None
    return float(votes) / obs.elapsed


def comparisons_toward_cycle(obs: Observation) -> tuple[int | None, int]:
    """(new comparisons the learner stored since its last cycle, how many start the next one).
    The count is None while the learner does not answer; the threshold falls back to the one the
    demo configured."""
    learner = obs.learner_metrics
    have = learner.get("rlhf_learner_new_comparisons")
    needed = learner.get("rlhf_learner_cycle_trigger_comparisons") or obs.cycle_comparisons
    return (None if have is None else int(have)), int(needed)


def running_stage(learner: dict[str, float]) -> str:
    """The stage the running cycle is in, with its optimiser steps when known; "" when idle."""
    stages = metric_labels(learner, "rlhf_learner_cycle_stage", "stage")
    running = [stage for stage, on in stages.items() if on]
    if not running:
        return ""
    steps = learner.get("rlhf_learner_stage_steps", 0.0)
    if steps:
        return f"{running[0]} step {learner.get('rlhf_learner_stage_step', 0.0):.0f}/{steps:.0f}"
    return running[0]


def duration(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# ---- the sections ---------------------------------------------------------------------------


def sections(obs: Observation) -> list[Section]:
    """The dashboard as sections of rows; both renderers share it."""
    return [
        ("adapters", _adapter_rows(obs)),
        ("learner", _learner_rows(obs)),
        ("traffic", _traffic_rows(obs)),
        ("events", _event_rows(obs)),
    ]


def _published(obs: Observation) -> list[str]:
    return [e.version for e in obs.adapter_events if e.kind == "adapter.published"]


def _adapter_rows(obs: Observation) -> list[Row]:
    published = _published(obs)
    shown = ", ".join(published[-3:]) + (f" (+{len(published) - 3} earlier)" * (len(published) > 3))
    rows = [
        Row("serving version", _serving_versions(obs.adapters), ALWAYS),
        Row("published", shown or "- (none yet)", ALWAYS),
    ]
    by_version = obs.sim.get("answers_by_version", {})
    newest = max((v for v in by_version if v not in ("base", "?")), key=_version_key, default="")
    for version in sorted(by_version, key=_version_key):
        r = by_version[version]
        priority = HIGH if version in ("base", newest) else LOW
        value = f"{r['answers']} · {r['mean_words']:.0f} words · utility {r['mean_utility']:+.2f}"
        rows.append(Row(f"answers {version}", value, priority))
    canary = _canary_row(obs)
    if canary is not None:
        rows.append(canary)
    rows.append(Row("eval vs base", obs.eval_line or "-", HIGH))
    rows.append(Row("mixed-pair votes", _h2h(obs.sim.get("head_to_head", {})), MEDIUM))
    return rows


def _canary_row(obs: Observation) -> Row | None:
    """The running canary's votes and interval (the learner decides from them), or its last
    decisions; nothing when canaries are off."""
    learner = obs.learner_metrics
    decisions = metric_labels(learner, "rlhf_learner_canary_decisions_total", "outcome")
    canary = (obs.adapters or {}).get("canary_version")
    if canary is None and not decisions:
        return None
    if canary is None:
        return Row("canary", f"none running · decided {_kv(decisions)}", HIGH)
    votes = learner.get("rlhf_learner_canary_decisive_votes")
    if votes is None:
        return Row("canary", f"{canary} · - votes", ALWAYS)
    low = learner.get("rlhf_learner_canary_win_rate_low", 0.0)
    high = learner.get("rlhf_learner_canary_win_rate_high", 1.0)
    return Row("canary", f"{canary} · {votes:.0f} votes · win rate [{low:.2f}, {high:.2f}]", ALWAYS)


def _serving_versions(adapters: dict[str, Any] | None) -> str:
    if adapters is None:
        return "- (serving not answering)"
    serving = str(adapters.get("serving_version") or "-")
    canary = adapters.get("canary_version")
    return f"{serving} · canary {canary}" if canary else serving


def _version_key(version: str) -> tuple[int, str]:
    """base first, then policy@v1, policy@v2, ... by number (v10 after v9)."""
    if version == BASE:
        return (-1, "")
    if not AdapterVersion.is_version(version):
        return (10**9, version)
    return (AdapterVersion.parse(version).number, version)


def _learner_rows(obs: Observation) -> list[Row]:
    learner = obs.learner_metrics
    stage = running_stage(learner)
    doing = f"training: {stage}" if stage else ("idle" if learner else "-")
    have, needed = comparisons_toward_cycle(obs)
    progress = f"{'-' if have is None else have} / {needed} comparisons"
    if stage:  # the learner does not ingest while it trains
        progress = f"counted again after this cycle (starts at {needed})"
    # The gauges read 0 from the start; they hold a figure once the stage that sets them ran.
    done = metric_labels(learner, "rlhf_learner_stage_duration_seconds_count", "stage")
    accuracy = (
        learner.get("rlhf_learner_reward_model_accuracy_ratio") if done.get("reward") else None
    )
    kl = learner.get("rlhf_learner_policy_kl_nats") if done.get("evaluate") else None
    return [
        Row("learner", f"{obs.learner_state} · {doing}", ALWAYS),
        Row("next cycle", progress, ALWAYS),
        Row("cycles", _kv(metric_labels(learner, "rlhf_learner_cycles_total", "outcome")), HIGH),
        Row("reward model / KL", f"accuracy {_num(accuracy)} · KL {_num(kl)} nats", MEDIUM),
        Row(
            "gates", _kv(metric_labels(learner, "rlhf_learner_gate_outcomes_total", "outcome")), LOW
        ),
        Row("stages done", _kv(done), LEAST),
    ]


def _traffic_rows(obs: Observation) -> list[Row]:
    sim, serving = obs.sim, obs.serving_metrics
    rate = comparison_rate(obs)
    served = _count(serving, "rlhf_serving_pairs_served_total")
    pairs = f"{sim.get('pairs', 0)} (serving counts {served})"
    if rate is not None:
        pairs += f" · {rate * 60:.1f} votes/min"
    feedback = (
        f"{_kv(sim.get('feedback_ok', {}))} · refused {_kv(sim.get('feedback_failed', {}), '0')}"
    )
    return [
        Row("pairs served", pairs, HIGH),
        Row("request errors", _kv(sim.get("errors", {}), empty="0"), HIGH),
        Row("votes", _kv(sim.get("votes", {})), MEDIUM),
        Row("feedback accepted", feedback, MEDIUM),
    ]


def _event_rows(obs: Observation) -> list[Row]:
    serving, learner = obs.serving_metrics, obs.learner_metrics
    spooled = _count(serving, "rlhf_serving_events_spooled_total")
    dropped = _count(serving, "rlhf_serving_events_dropped_total")
    produced = metric_labels(serving, "rlhf_serving_events_produced_total", "topic")
    consumed = metric_labels(learner, "rlhf_learner_events_consumed_total", "kind")
    return [
        Row("spooled / dropped", f"{spooled} / {dropped}", MEDIUM),
        Row("produced", _kv(produced, empty="0" if serving else "-"), LOW),
        Row("learner consumed", _kv(consumed, empty="0" if learner else "-"), LOW),
    ]


def _count(metrics: dict[str, float], name: str) -> str:
    """A counter's total, or "-" when the service did not answer the scrape."""
    return f"{metric_sum(metrics, name):.0f}" if metrics else "-"


def _kv(mapping: dict[str, Any], empty: str = "-") -> str:
    return " ".join(f"{k}={_short(v)}" for k, v in sorted(mapping.items())) or empty


def _short(value: Any) -> str:
    return f"{value:.0f}" if isinstance(value, float) else str(value)


def _num(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _h2h(h2h: dict[str, dict[str, float]]) -> str:
    if not h2h:
        return "-"
    return "  ".join(f"{k}: {v['score_first'] / v['n']:.2f} of {v['n']}" for k, v in h2h.items())


def title(obs: Observation) -> str:
    return f"RLHF loop demo · {obs.preference} · {duration(obs.elapsed)} · Ctrl-C stops cleanly"


# ---- the renderers --------------------------------------------------------------------------


def render_text(obs: Observation) -> str:
    lines = [title(obs), *header_lines(obs)]
    for section, rows in sections(obs):
        lines.append(f"== {section}")
        lines.extend(f"  {row.label:<20} {row.value}" for row in rows)
    return "\n".join(lines)


class Dashboard:
    """A rich renderable that fits the console it is drawn on (see the module docstring)."""

    def __init__(self, obs: Observation) -> None:
        self.obs = obs

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        height = options.height or options.max_height
        unbounded = options.update(height=None)
        candidate = self._build(LEAST)
        for cutoff in range(LEAST, ALWAYS - 1, -1):
            candidate = self._build(cutoff)
            if len(console.render_lines(candidate, unbounded, pad=False)) <= height:
                break
        yield candidate

    def _build(self, cutoff: int) -> Any:
        from rich.console import Group
        from rich.panel import Panel
        from rich.rule import Rule
        from rich.table import Table
        from rich.text import Text

        parts: list[Any] = [Text(line, overflow="fold") for line in header_lines(self.obs)]
        for section, rows in sections(self.obs):
            shown = [row for row in rows if row.priority <= cutoff]
            if not shown:
                continue
            table = Table.grid(padding=(0, 1))
            table.add_column(style="bold cyan", no_wrap=True, min_width=18)
            table.add_column(no_wrap=True, overflow="ellipsis")
            for row in shown:
                table.add_row(row.label, row.value)
            parts += [Rule(section, align="left", style="dim"), table]
        return Panel(Group(*parts), title=title(self.obs), title_align="left", padding=(0, 1))


def render_rich(obs: Observation) -> Any:
    return Dashboard(obs)
