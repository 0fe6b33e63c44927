"""The host's CPU budget: the CPUs this process may use, and each analyzer's share of them.

The CPUs are the scheduler affinity's, bounded by the cgroup's CPU quota (a container's
`--cpus`, read in cgroups.py), not `os.cpu_count()`, which counts the whole machine.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from soundspan_hooks import WorkerCount, WorkerShare
from soundspan_host.cgroups import tightest_limit
from soundspan_host.plugins import Plugins

GPU_WORKERS = 2  # `auto` on a GPU: two keep it busy (README "GPU": ~74 tracks/min for CLAP)
GPU_SHARE = WorkerShare(GPU_WORKERS, f"auto: {GPU_WORKERS} on the GPU, outside the CPU budget")


@dataclass(frozen=True)
class CpuLimits:
    """What limits the CPUs this process may use."""

    affinity: int | None  # CPUs the scheduler lets it run on; None where the OS cannot say
    quota: float | None  # its cgroup's CPU quota in CPUs (150000/100000: 1.5); None: no quota

    @property
    def usable(self) -> int:
        """The CPUs it may keep busy: a fractional quota rounded down, at least 1."""
        counts = [self.affinity or os.cpu_count() or 1]
        if self.quota is not None:
            counts.append(math.floor(self.quota))
        return max(1, min(counts))

    def describe(self) -> str:
        quota = "none" if self.quota is None else f"{self.quota:g}"
        return f"{cpus(self.usable)} (affinity {self.affinity or 'unknown'}, cgroup quota {quota})"


def cpus(count: int) -> str:
    return f"{count} CPU" if count == 1 else f"{count} CPUs"


def read_cpu_limits(root: Path = Path("/")) -> CpuLimits:
    """This process's CPU limits; `root` is where /proc and /sys are found (a test's folder)."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return CpuLimits(affinity, cgroup_cpu_quota(root))


def cgroup_cpu_quota(root: Path = Path("/")) -> float | None:
    """The tightest CPU quota, in CPUs, of this process's cgroups and their ancestors (v2
    `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`); None where none is set."""
    return tightest_limit(root, "cpu", _v2_quota, _v1_quota)


def _v2_quota(folder: Path) -> float | None:
    try:
        limit, period = (folder / "cpu.max").read_text().split()
        return None if limit == "max" else int(limit) / int(period)
    except (OSError, ValueError):
        return None


def _v1_quota(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None  # -1: no quota


@dataclass(frozen=True)
class AnalyzerDemand:
    """What an enabled analyzer's settings ask of the budget."""

    name: str
    workers: WorkerCount
    threads_per_worker: int = 1
    on_gpu: bool = False  # its settings say `device = "cuda"`


def demands_from_settings(
    sections: Mapping[str, Any], enabled: Iterable[str]
) -> list[AnalyzerDemand]:
    """The enabled plugins whose section has a `workers` setting, in loading order."""
    return [
        AnalyzerDemand(
            name,
            section.workers,
            getattr(section, "threads_per_worker", 1),
            getattr(section, "device", "cpu") == "cuda",
        )
        for name in enabled
        if (section := sections.get(name)) is not None and hasattr(section, "workers")
    ]


def split_budget(usable: int, demands: Sequence[AnalyzerDemand]) -> dict[str, WorkerShare]:
    """Each analyzer's workers: an explicit number as set, taking `threads_per_worker` CPUs a
    worker; the CPUs left split evenly between the `auto` ones on the CPU, the first in loading
    order taking the odd one (MusiCNN: its tags make a library searchable first), and at least
    1 worker each, so none waits forever. An `auto` one on a GPU runs GPU_WORKERS, outside the
    budget: its processes mostly wait on the GPU.

    Made from settings alone, before any model loads, so `doctor` shows the same split; an
    analyzer that is unavailable for now (a model downloading) keeps its share for when it
    starts, as a running pool is not resized."""
    explicit = [demand for demand in demands if demand.workers != "auto"]
    sharing = [demand for demand in demands if demand.workers == "auto" and not demand.on_gpu]
    left = max(usable - sum(d.workers * d.threads_per_worker for d in explicit), 0)
    shares = {d.name: WorkerShare(d.workers, f"set: workers = {d.workers}") for d in explicit}
    for index, demand in enumerate(sharing):
        share = left // len(sharing) + (1 if index < left % len(sharing) else 0)
        others = [
            other.name
            for other in (*explicit, *sharing)
            if other is not demand and other.workers != 0
        ]
        explained = f"auto: {share} of {cpus(usable)}"
        if demand.threads_per_worker > 1:
            explained += f" at {demand.threads_per_worker} threads a worker"
        if others:
            explained += f", shared with {' and '.join(others)}"
        if share < demand.threads_per_worker:
            explained += "; 1 worker at least"
        shares[demand.name] = WorkerShare(max(1, share // demand.threads_per_worker), explained)
    return {demand.name: shares.get(demand.name, GPU_SHARE) for demand in demands}


@dataclass(frozen=True)
class CpuBudget:
    """The host's CPUs and how they were split between its analyzers."""

    limits: CpuLimits
    demands: Mapping[str, AnalyzerDemand]
    shares: Mapping[str, WorkerShare]

    @classmethod
    def split(cls, limits: CpuLimits, demands: Sequence[AnalyzerDemand]) -> CpuBudget:
        by_name = {demand.name: demand for demand in demands}
        return cls(limits, by_name, split_budget(limits.usable, demands))

    def share(self, analyzer: str, on_gpu: bool = False) -> WorkerShare:
        """`analyzer`'s share; `on_gpu`: it found a GPU with `device = "auto"`."""
        if on_gpu and self.demands[analyzer].workers == "auto":
            return GPU_SHARE
        return self.shares[analyzer]

    def describe(self) -> str:
        """One line: "2 CPUs (affinity 2, cgroup quota none): musicnn 1, clap 1"."""
        split = ", ".join(
            f"{name} {share.workers}" + (" on the GPU" if share is GPU_SHARE else "")
            for name, share in self.shares.items()
        )
        return f"{self.limits.describe()}: {split or 'no analyzers'}"


def host_budget(plugins: Plugins) -> CpuBudget:
    """The budget of a host running the registered plugins (a worker process: its one)."""
    enabled = [name for name, _ in plugins.manager.list_name_plugin()]
    demands = demands_from_settings(plugins.settings.sections, enabled)
    return CpuBudget.split(read_cpu_limits(), demands)
