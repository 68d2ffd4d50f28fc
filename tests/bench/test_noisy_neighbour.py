"""bench.noisy_neighbour's pure parts: the ratio and its verdict, the report (a run line
bench.summary reads, the table), appending runs to the results file, serve's extra settings."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.noisy_neighbour import (
    TITLE,
    Phase,
    RunInfo,
    append_report,
    build_parser,
    ratio,
    report,
    serve_env,
    verdict,
)
from bench.serving_load import LoadResult
from bench.summary import latest_run, table_cell

pytestmark = pytest.mark.unit

QUIET = Phase("quiet", tokens=3810, wall=30.0, requests=60, p50=14.2, errors=0)
NOISY = Phase("2 neighbours at nice 19", tokens=2540, wall=31.75, requests=40, p50=21.0, errors=0)


def _info(**changes: object) -> RunInfo:
    values: dict[str, object] = {
        "when": datetime(2026, 12, 8, 9, 30, tzinfo=UTC),
        "command": "--seconds 30",
        "machine": "AMD EPYC, 2 CPUs",
        "torch_threads_setting": 0,
        "torch_threads": 2,
        "omp_wait_policy": "",
        "neighbours": 2,
        "clients": 32,
        "seconds": 30.0,
        "max_tokens": 64,
    }
    return RunInfo(**(values | changes))  # type: ignore[arg-type]


def test_ratio_is_noisy_over_quiet_throughput() -> None:
    assert QUIET.tokens_per_second == pytest.approx(127.0)
    assert ratio(QUIET, NOISY) == pytest.approx(80.0 / 127.0)
    empty = Phase("quiet", 0, 30.0, 0, math.nan, 64)
    assert math.isnan(ratio(empty, NOISY))


def test_verdict_against_the_target() -> None:
    assert verdict(0.6) == "target >= 0.60: met"
    assert verdict(7.5 / 127) == "target >= 0.60: NOT met"
    assert verdict(math.nan).startswith("not measured")


def test_phase_from_a_load() -> None:
    load = LoadResult(wall=10.0, latencies=[1.0, 2.0, 3.0], tokens=500, errors=1)
    phase = Phase.of("quiet", load)
    assert (phase.tokens_per_second, phase.requests, phase.p50, phase.errors) == (50.0, 3, 2.0, 1)


def test_report_has_the_run_line_the_table_and_the_ratio() -> None:
    text = report(_info(), QUIET, NOISY)
    run = latest_run(text, "bench.noisy_neighbour")
    assert run is not None
    assert (run.date, run.command) == (
        "2026-12-08 09:30",
        ".venv/bin/python -m bench.noisy_neighbour --seconds 30",
    )
    assert table_cell(text, "quiet", "tokens/s") == "127.0"
    assert table_cell(text, "2 neighbours at nice 19", "tokens/s") == "80.0"
    assert "Noisy / quiet: **0.63** (target >= 0.60: met)." in text
    assert "SERVING_TORCH_THREADS 0 (automatic) -> torch threads 2" in text
    assert "OMP_WAIT_POLICY unset (libgomp default)" in text


def test_report_names_an_explicit_setting_and_wait_policy() -> None:
    text = report(
        _info(torch_threads_setting=1, torch_threads=1, omp_wait_policy="PASSIVE"), QUIET, NOISY
    )
    assert "SERVING_TORCH_THREADS 1 -> torch threads 1; OMP_WAIT_POLICY PASSIVE" in text


def test_runs_are_appended_under_one_title(tmp_path: Path) -> None:
    out = tmp_path / "results" / "noisy_neighbour.md"
    append_report(out, "Run A\n")
    append_report(out, "Run B\n")
    assert out.read_text() == f"{TITLE}\n\nRun A\n\nRun B\n"


def test_serve_env_and_options() -> None:
    assert serve_env(0, None) == {"SERVING_TORCH_THREADS": "0"}
    assert serve_env(2, "PASSIVE") == {"SERVING_TORCH_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"}
    args = build_parser().parse_args(["--torch-threads", "1", "--omp-wait-policy", "PASSIVE"])
    assert (args.torch_threads, args.omp_wait_policy, args.clients, args.seconds) == (
        1,
        "PASSIVE",
        32,
        30.0,
    )
    assert args.max_tokens == 64
