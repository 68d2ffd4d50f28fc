"""Schemathesis against a running server: generated requests, every check, counts parsed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ST = Path(sys.executable).parent / "st"


def run_schemathesis(
    base_url: str, token: str, paths: str, examples: int, cwd: Path
) -> tuple[int, int, str]:
    """(cases generated, cases passed, report) for the operations whose path matches."""
    run = subprocess.run(
        [
            str(ST), "run", f"{base_url}/openapi.json",
            "--checks", "all", "--workers", "1", "--max-examples", str(examples),
            "--include-path-regex", paths, "--continue-on-failure", "--seed", "1",
            "-H", f"Authorization: Bearer {token}",
        ],
        cwd=cwd, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    found = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
    if run.returncode != 0 or not found:
        return 0, 0, run.stdout[-6000:] + run.stderr[-2000:]
    return int(found.group(1)), int(found.group(2)), run.stdout
