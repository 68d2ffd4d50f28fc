"""Install the pinned torch into this interpreter's environment, as the CPU build where no GPU is.

On a machine without an NVIDIA GPU, PyPI's Linux torch wheel is the multi-GB CUDA build; PyTorch
publishes the CPU build (``2.13.0+cpu``) on its own index. So: without a GPU, when that index
answers a short probe, torch comes from it; otherwise (a GPU, or the index unreachable: offline,
a firewall, a mirror-only network) pip resolves ``torch==VERSION`` as configured, which may be a
local wheel folder or a mirror. Nothing here waits long on a network that does not answer: the
probe gives up after ``--probe-timeout`` seconds (DNS included) and pip reading from the index
after ``--pip-timeout``. The last line says which build is installed.

Usage: python scripts/torch_install.py [--version 2.13.0] [--gpu auto|yes|no] [--dry-run]
Standard library only: it runs before anything else is installed (scripts/setup.sh, Dockerfile).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import subprocess
import sys
import threading
import tomllib
import urllib.request
from dataclasses import dataclass
from pathlib import Path

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


@dataclass(frozen=True)
class Plan:
    """What to do: ``index`` None means pip's own resolution; ``skip`` means nothing to do."""

    reason: str
    index: str | None = None
    skip: bool = False


def say(message: str) -> None:
    print(f"[setup] torch: {message}", flush=True)


def pinned_version(pyproject: Path = PYPROJECT) -> str:
    """The ``torch==X`` pin of the project's dependencies."""
    for dep in tomllib.loads(pyproject.read_text())["project"]["dependencies"]:
        name, sep, version = dep.partition("==")
        if name.strip() == "torch" and sep:
            return version.strip()
    raise SystemExit(f"no torch==VERSION pin in {pyproject}")


def has_nvidia_gpu() -> bool:
    """The NVIDIA driver is loaded (what a CUDA build needs); no import, no subprocess."""
    return Path("/proc/driver/nvidia/version").exists() or any(Path("/dev").glob("nvidia[0-9]*"))


def index_reachable(url: str, timeout: float) -> bool:
    """Does ``url`` answer an HTTP request within ``timeout`` seconds, all included?

    urllib's timeout covers each socket operation but not name resolution, which can hang far
    longer on a broken network; the request runs in a daemon thread that is abandoned when the
    time is up."""
    answered = threading.Event()

    def probe() -> None:
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/torch/", timeout=timeout) as resp:
                if resp.status < 400:
                    answered.set()
        except (OSError, ValueError):
            pass

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout)
    return answered.is_set()


def installed_build() -> tuple[str, bool] | None:
    """(version, built for CUDA) of the torch installed here, read from its metadata (importing
    torch takes seconds); None when there is none. CUDA builds depend on the nvidia-* wheels."""
    try:
        version = importlib.metadata.version("torch")
        requires = importlib.metadata.requires("torch") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    return version, any(req.startswith("nvidia-") for req in requires)


def plan(version: str, gpu: bool, index: str, probe_timeout: float) -> Plan:
    installed = installed_build()
    if (
        installed is not None
        and installed[0].split("+")[0] == version
        and (gpu or not installed[1])
    ):
        build = "CUDA" if installed[1] else "CPU-only"
        return Plan(f"{installed[0]} ({build} build) already installed", skip=True)
    if gpu:
        return Plan("NVIDIA GPU found: default resolution (CUDA build)")
    if index_reachable(index, probe_timeout):
        return Plan(f"no GPU: CPU build from {index}", index=index)
    return Plan(
        f"no GPU, and {index} did not answer within {probe_timeout:g} s: default resolution"
    )


def pip_command(version: str, index: str | None, pip_timeout: float) -> list[str]:
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    if index is not None:
        # Only torch's own wheels come from there; pip's configured indexes and wheel folders
        # still serve its dependencies.
        cmd += ["--index-url", index, "--timeout", f"{pip_timeout:g}", "--retries", "2"]
    return [*cmd, f"torch=={version}"]


def describe_installed() -> str:
    """torch.__version__ and whether CUDA is in it, from the installed torch itself."""
    code = (
        "import torch; cuda = torch.version.cuda; "
        "print(torch.__version__, f'(CUDA {cuda} build)' if cuda else '(CPU-only build)')"
    )
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    return done.stdout.strip() if done.returncode == 0 else f"does not import: {done.stderr[-500:]}"


def install(version: str, chosen: Plan, pip_timeout: float) -> int:
    if subprocess.run(pip_command(version, chosen.index, pip_timeout)).returncode == 0:
        return 0
    if chosen.index is None:
        return 1
    say(f"install from {chosen.index} failed: default resolution instead")
    return subprocess.run(pip_command(version, None, pip_timeout)).returncode


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    p.add_argument("--version", default=None, help="torch version (default: pyproject's pin)")
    p.add_argument(
        "--gpu",
        choices=("auto", "yes", "no"),
        default="auto",
        help="is this for a machine with an NVIDIA GPU (default: auto, look for its driver)",
    )
    p.add_argument(
        "--index",
        default=os.environ.get("RLHF_TORCH_CPU_INDEX", CPU_INDEX),
        help=f"PyTorch's CPU wheel index (default: $RLHF_TORCH_CPU_INDEX, else {CPU_INDEX})",
    )
    p.add_argument(
        "--probe-timeout", type=float, default=5.0, help="seconds the index may take (default: 5)"
    )
    p.add_argument(
        "--pip-timeout",
        type=float,
        default=30.0,
        help="pip's socket timeout on that index (default: 30)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the pip command, install nothing")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    version = args.version or pinned_version()
    gpu = has_nvidia_gpu() if args.gpu == "auto" else args.gpu == "yes"
    chosen = plan(version, gpu, args.index, args.probe_timeout)
    say(chosen.reason)
    if chosen.skip:
        return 0
    if args.dry_run:
        print(" ".join(pip_command(version, chosen.index, args.pip_timeout)), flush=True)
        return 0
    status = install(version, chosen, args.pip_timeout)
    if status == 0:
        say(f"installed {describe_installed()}")
    return status


if __name__ == "__main__":
    sys.exit(main())
