"""common.cpu_budget: the CPUs a process may use (affinity, cgroup v2 / v1 quota) and torch's
thread count set from them, on faked /proc and /sys files."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

import common.cpu_budget as budget_module
from common.cpu_budget import (
    CpuBudget,
    automatic_threads,
    available_cpus,
    configure_torch_threads,
    cpu_budget,
)

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def many_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 64-CPU affinity, so the faked quotas are what limits; no OMP_NUM_THREADS."""
    monkeypatch.setattr(budget_module.os, "sched_getaffinity", lambda _pid: set(range(64)))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _v2(root: Path, cpu_max: str, cgroup: str = "/", at: str = "") -> Path:
    """A cgroup v2 host: the process in ``cgroup``, ``cpu.max`` in the directory ``at``."""
    _write(root / "proc/self/cgroup", f"0::{cgroup}\n")
    _write(root / "sys/fs/cgroup" / at.strip("/") / "cpu.max", cpu_max + "\n")
    return root


def _v1(root: Path, quota: int, period: int = 100000, mount: str = "cpu,cpuacct") -> Path:
    _write(root / "proc/self/cgroup", "4:memory:/pod\n3:cpu,cpuacct:/pod\n0::/\n")
    _write(root / "sys/fs/cgroup" / mount / "pod/cpu.cfs_quota_us", f"{quota}\n")
    _write(root / "sys/fs/cgroup" / mount / "pod/cpu.cfs_period_us", f"{period}\n")
    return root


def test_no_quota_leaves_the_affinity(tmp_path: Path) -> None:
    root = _v2(tmp_path, "max 100000")
    assert available_cpus(root) == 64
    assert cpu_budget(root).source == "CPU affinity"


def test_no_cgroup_files_at_all_leaves_the_affinity(tmp_path: Path) -> None:
    assert available_cpus(tmp_path) == 64


@pytest.mark.parametrize(
    ("cpu_max", "threads"),
    [("200000 100000", 2), ("150000 100000", 2), ("50000 100000", 1), ("1000 100000", 1)],
)
def test_v2_quota_rounds_up_to_whole_threads(tmp_path: Path, cpu_max: str, threads: int) -> None:
    root = _v2(tmp_path, cpu_max)
    assert available_cpus(root) == threads
    assert cpu_budget(root).source == "cgroup v2 cpu.max"


def test_v2_nested_cgroup_path_from_proc_self_cgroup(tmp_path: Path) -> None:
    pod = "/kubepods.slice/kubepods-pod1.slice/cri-abc.scope"
    root = _v2(tmp_path, "300000 100000", cgroup=pod, at=pod)
    _write(root / "sys/fs/cgroup/cpu.max", "max 100000\n")  # the host's root: no quota
    assert available_cpus(root) == 3


def test_v2_an_ancestors_quota_limits_its_children(tmp_path: Path) -> None:
    pod = "/kubepods.slice/pod1.slice/cri-abc.scope"
    root = _v2(tmp_path, "max 100000", cgroup=pod, at=pod)
    _write(root / "sys/fs/cgroup/kubepods.slice/pod1.slice/cpu.max", "400000 100000\n")
    assert available_cpus(root) == 4


def test_v2_path_missing_in_the_container_mount_reads_the_mount_root(tmp_path: Path) -> None:
    """Without a cgroup namespace the host path is listed, but the container's mount holds
    only its own cgroup, at the mount's root."""
    root = _v2(tmp_path, "200000 100000", cgroup="/kubepods/pod1/abc", at="")
    assert available_cpus(root) == 2


@pytest.mark.parametrize("mount", ["cpu,cpuacct", "cpu"])
def test_v1_cfs_quota(tmp_path: Path, mount: str) -> None:
    root = _v1(tmp_path, 250000, mount=mount)
    assert available_cpus(root) == 3
    assert cpu_budget(root).source == "cgroup v1 cpu.cfs_quota_us"


def test_v1_minus_one_is_no_quota(tmp_path: Path) -> None:
    assert available_cpus(_v1(tmp_path, -1)) == 64


def test_affinity_smaller_than_the_quota_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(budget_module.os, "sched_getaffinity", lambda _pid: {0, 1})
    root = _v2(tmp_path, "800000 100000")
    assert available_cpus(root) == 2
    assert cpu_budget(root).source == "CPU affinity"


def test_automatic_shares_the_budget_among_local_processes(tmp_path: Path) -> None:
    root = _v2(tmp_path, "800000 100000")
    shared = (2, "cgroup v2 cpu.max, shared by 4 processes")
    assert automatic_threads(processes=4, root=root) == shared
    assert automatic_threads(processes=16, root=root)[0] == 1


def test_automatic_follows_omp_num_threads_where_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert automatic_threads(root=_v2(tmp_path, "100000 100000")) == (3, "OMP_NUM_THREADS")


class FakeTorch:
    """torch's thread setters, recorded; inter-op refused as after parallel work started."""

    def __init__(self) -> None:
        self.threads: list[int] = []

    def set_num_threads(self, n: int) -> None:
        self.threads.append(n)

    def set_num_interop_threads(self, n: int) -> None:
        raise RuntimeError("cannot set number of interop threads after parallel work has started")

    def get_num_interop_threads(self) -> int:
        return 64


@pytest.fixture
def fake_torch(monkeypatch: pytest.MonkeyPatch) -> FakeTorch:
    fake = FakeTorch()
    monkeypatch.setitem(sys.modules, "torch", fake)
    return fake


def test_setting_overrides_the_budget(
    fake_torch: FakeTorch, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="common.cpu_budget"):
        assert configure_torch_threads(5) == 5
    assert fake_torch.threads == [5]
    assert "torch uses 5 thread(s) (from the torch_threads setting)" in caplog.text


def test_automatic_sets_the_budget_and_survives_a_refused_interop_count(
    fake_torch: FakeTorch, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # This machine's own cgroup files must not decide the figure.
    monkeypatch.setattr(budget_module, "cpu_budget", lambda root: CpuBudget(2.5, "CPU affinity"))
    with caplog.at_level(logging.INFO, logger="common.cpu_budget"):
        assert configure_torch_threads(0) == 3
    assert fake_torch.threads == [3]
    assert "(from CPU affinity)" in caplog.text


def test_real_torch_follows_the_setting() -> None:
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    try:
        assert configure_torch_threads(1) == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
