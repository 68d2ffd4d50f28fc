"""The benchmarks, the acceptance run and the reliability suite, each run as
``python -m bench.NAME`` from the repository root (``python -m bench.bench_all`` runs the system
benchmarks and regenerates ``bench/results/summary.md``). What they share with the demo (starting
the services, the evaluation config, the LoRA writer, the command-line options) lives in
``loop/``; their results and where each current figure comes from: ``bench/results/README.md``."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
