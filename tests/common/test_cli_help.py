"""Every console entry point's ``--help``: each option explains itself and names its default at
most once, and asking for help imports none of the heavy libraries (so it answers at once).

Each entry point runs in its own interpreter, as a user's shell would start it, from the table
in pyproject.toml, so a new script or option is checked without editing this test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS: dict[str, str] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]

# Seconds to import, on any machine: never needed to print help.
NEVER = ("torch", "transformers", "peft", "accelerate", "vllm", "matplotlib", "numpy")
# Service clients and parsers: the launchers and services do not need them for help either (the
# simulator and the evaluation are API clients through and through, and may import theirs).
CLIENTS = ("openai", "httpx", "kafka", "prometheus_client", "rich")
LIGHT = {"serve", "learner", "rlhf-demo", "rlhf-broker", "rlhf-model"}

_RUN_HELP = """
import json, sys
from {module} import {function} as main
try:
    main({argv!r})
except SystemExit:
    pass
sys.stderr.write("\\nIMPORTED " + json.dumps(sorted(m for m in {watched!r} if m in sys.modules)))
"""


def _help(script: str, argv: list[str]) -> tuple[str, list[str]]:
    """(help text, watched modules imported) of ``script argv --help``."""
    module, function = SCRIPTS[script].split(":")
    code = _RUN_HELP.format(
        module=module, function=function, argv=[*argv, "--help"], watched=NEVER + CLIENTS
    )
    env = os.environ | {"COLUMNS": "100", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    imported = json.loads(proc.stderr.rsplit("IMPORTED ", 1)[1])
    return proc.stdout, imported


def options(help_text: str) -> dict[str, str]:
    """{option invocation: its help text} from the "options:" section of argparse's help."""
    found: dict[str, str] = {}
    section, current = "", ""
    for line in help_text.splitlines():
        if line and not line.startswith(" "):
            section = line
            continue
        if section != "options:" or not line.strip():
            continue
        if line.startswith("  -"):  # "  --port PORT     TCP port ...", or help on the next line
            current, *text = re.split(r"\s{2,}", line.strip(), maxsplit=1)
            found[current] = " ".join(text)
        else:  # a wrapped or moved-down help line
            found[current] = (found[current] + " " + line.strip()).strip()
    return found


def _commands(help_text: str) -> list[str]:
    """Subcommands listed as ``{a,b,c}`` in the positional arguments."""
    match = re.search(r"^\s+\{([\w,-]+)\}\s*$", help_text, re.MULTILINE)
    return match.group(1).split(",") if match else []


LEARNER_COMMANDS = ("run", "sft", "train-reward", "ppo", "erase", "status")


def _invocations() -> list[list[str]]:
    runs = [[script] for script in SCRIPTS]
    return runs + [["learner", command] for command in LEARNER_COMMANDS]


@pytest.mark.parametrize("invocation", _invocations(), ids=" ".join)
def test_every_option_has_help_and_one_default_at_most(invocation: list[str]) -> None:
    text, imported = _help(invocation[0], invocation[1:])
    found = options(text)
    assert found, text
    for option, help_text in found.items():
        if option.startswith("-h"):
            continue
        assert help_text, f"{' '.join(invocation)} {option} has no help text"
        assert help_text.lower().count("default") <= 1, f"{option}: {help_text}"
    assert not set(imported) & set(NEVER), f"--help imported {imported}"
    if invocation[0] in LIGHT:
        assert imported == [], f"--help imported {imported}"


def test_learner_subcommands_are_all_checked() -> None:
    text, _ = _help("learner", [])
    assert _commands(text) == list(LEARNER_COMMANDS)


@pytest.mark.parametrize(
    ("invocation", "option", "default"),
    [
        (["serve"], "--log-level {debug,info,warning,error}", "(default: info)"),
        (["serve"], "--port PORT", "(default: 8000; env SERVING_PORT)"),
        (["rlhf-demo"], "--ready-timeout READY_TIMEOUT", "(default: 600.0)"),
        (["rlhf-demo"], "--data-dir DATA_DIR", "(default: var/demo/run-<time>)"),
        (["learner", "run"], "--min-new-comparisons MIN_NEW_COMPARISONS", "(default: 64;"),
        (["rlhf-broker"], "--port PORT", "(default: 9092)"),
    ],
)
def test_defaults_are_shown(invocation: list[str], option: str, default: str) -> None:
    text, _ = _help(invocation[0], invocation[1:])
    assert default in options(text)[option], options(text)[option]
