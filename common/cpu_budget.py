"""How many CPUs this process may use, and torch's thread count set from it.

torch starts as many OpenMP threads as the machine has cores (``std::thread::hardware_concurrency``)
whatever the process may use: a pod with a 2-CPU limit on a 64-core node runs 64 threads on 2
CPUs' worth of time. OpenMP threads spin at every barrier of a parallel region, so a thread
that the kernel preempted (for a neighbour, or because the quota ran out) stalls all the others
until it runs again: on a 2-core machine a compiler at nice 19 beside ``serve`` took the engine
from 127 to 7.5 tokens/s (``bench/noisy_neighbour.py`` measures it).

What the process may use is the smallest of:

- its CPU affinity (``os.sched_getaffinity``: ``taskset``, a cpuset, Kubernetes' static CPU
  manager);
- the cgroup v2 quota, ``cpu.max`` ("QUOTA PERIOD" or "max PERIOD") of its own cgroup and every
  ancestor (https://docs.kernel.org/admin-guide/cgroup-v2.html#cpu-interface-files);
- the cgroup v1 CFS quota, ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (-1: none)
  (https://docs.kernel.org/scheduler/sched-bwc.html),

rounded up to a whole thread (at least 1). The cgroup path comes from ``/proc/self/cgroup``; in a
container that path may not exist under the container's own ``/sys/fs/cgroup`` mount (a cgroup
namespace shows "/"), so each ancestor of the path is tried down to the mount's root.
The JVM's container support and Go 1.25's default ``GOMAXPROCS`` read the same limits.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

# Where cgroup v1 mounts the cpu controller, by distribution.
_V1_CPU_MOUNTS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


@dataclass(frozen=True)
class CpuBudget:
    """The CPUs the process may use (``cpus``, possibly fractional) and what limited it."""

    cpus: float
    source: str

    @property
    def threads(self) -> int:
        """Whole threads: a 1.5-CPU quota runs 2 (at least 1)."""
        return max(1, math.ceil(self.cpus - 1e-9))


def cpu_budget(root: Path = Path("/")) -> CpuBudget:
    """The smallest of the affinity and the cgroup v2 / v1 quotas; ``root`` is the filesystem
    root the cgroup files are read under (tests fake them)."""
    limits = [CpuBudget(float(_affinity_cpus()), "CPU affinity")]
    v1, v2 = _cgroup_paths(root / "proc/self/cgroup")
    if v2 is not None:
        quota = _v2_quota(root / "sys/fs/cgroup", v2)
        if quota is not None:
            limits.append(CpuBudget(quota, "cgroup v2 cpu.max"))
    if v1 is not None:
        quota = _v1_quota(root / "sys/fs/cgroup", v1)
        if quota is not None:
            limits.append(CpuBudget(quota, "cgroup v1 cpu.cfs_quota_us"))
    return min(limits, key=lambda limit: limit.cpus)


def available_cpus(root: Path = Path("/")) -> int:
    """Whole CPUs this process may use: :func:`cpu_budget` rounded up, at least 1."""
    return cpu_budget(root).threads


def _affinity_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _cgroup_paths(proc_cgroup: Path) -> tuple[str | None, str | None]:
    """The process's cgroup v1 ``cpu`` controller path and its cgroup v2 path (either None)."""
    v1 = v2 = None
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v1, v2


def _candidates(mount: Path, path: str) -> list[Path]:
    """``mount``/``path`` and each ancestor of it down to ``mount`` itself."""
    parts = [p for p in path.split("/") if p]
    return [mount.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def _smallest(quotas: list[float]) -> float | None:
    return min(quotas) if quotas else None


def _v2_quota(mount: Path, path: str) -> float | None:
    """The smallest ``cpu.max`` quota, in CPUs, on the path from the cgroup to the root."""
    quotas = []
    for directory in _candidates(mount, path):
        try:
            quota, _, period = (directory / "cpu.max").read_text().strip().partition(" ")
        except OSError:
            continue
        if quota != "max" and period:
            quotas.append(int(quota) / int(period))
    return _smallest(quotas)


def _v1_quota(mount: Path, path: str) -> float | None:
    """The smallest CFS quota, in CPUs, on the path from the cgroup to the root."""
    quotas = []
    for name in _V1_CPU_MOUNTS:
        for directory in _candidates(mount / name, path):
            try:
                quota = int((directory / "cpu.cfs_quota_us").read_text())
                period = int((directory / "cpu.cfs_period_us").read_text())
            except (OSError, ValueError):
                continue
            if quota > 0 and period > 0:
                quotas.append(quota / period)
    return _smallest(quotas)


def automatic_threads(processes: int = 1, root: Path = Path("/")) -> tuple[int, str]:
    """The thread count for one of ``processes`` processes sharing this CPU budget, and why:
    ``OMP_NUM_THREADS`` where set (a launcher's or the operator's choice), else the budget
    divided among the processes."""
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 0:
        return int(omp), "OMP_NUM_THREADS"
    budget = cpu_budget(root)
    share = f", shared by {processes} processes" if processes > 1 else ""
    return max(1, budget.threads // max(1, processes)), f"{budget.source}{share}"


def configure_torch_threads(setting: int, processes: int = 1) -> int:
    """Set torch's intra-op (and, while still allowed, inter-op) thread count: ``setting``
    threads, or with 0 :func:`automatic_threads`; log it once and return it."""
    import torch  # here: a command's --help must not pay for importing it

    if setting > 0:
        threads, source = setting, "the torch_threads setting"
    else:
        threads, source = automatic_threads(processes)
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError as exc:
        # torch refuses once inter-op parallel work has started; intra-op threads are the ones
        # that spin at barriers, so the count above is the one that matters.
        logger.debug("inter-op threads left at %d: %s", torch.get_num_interop_threads(), exc)
    logger.info("torch uses %d thread(s) (from %s)", threads, source)
    return threads
