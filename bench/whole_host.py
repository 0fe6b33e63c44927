"""What bench/host.py measures of the whole host's memory, first start included: every process
that is part of it (the host, what it spawns: analyzer workers, CLAP's export, and the embedded
PostgreSQL's processes, which pg_ctl starts outside the host's tree), sampled every 0.1 s.

The whole host's peak is the largest sum of their RSS at one sample (what a 4 GB NAS must hold
at once); each process's own peak is its kernel high-water mark (VmHWM), exact even for a peak
shorter than a sample. Shared pages (PostgreSQL's shared buffers, libraries) count once per
process that maps them, so the sum is an upper bound.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from common import BenchHost

SAMPLE_SECONDS = 0.1
MIB = 2**20


@dataclass
class ProcessPeak:
    role: str  # host, postgres, worker, torch helper (CLAP's export), other
    started_s: float  # after the host's launch
    peak: int = 0  # bytes


class WholeHostMemory(threading.Thread):
    """Samples every process of `host` from its launch until stopped."""

    def __init__(self, host: BenchHost) -> None:
        super().__init__(daemon=True)
        self.host = host
        self.launched = time.time()
        self.processes: dict[int, ProcessPeak] = {}
        self.peak, self.peak_s, self.peak_parts = 0, 0.0, {}
        self.ready_s: float | None = None  # set at ready: from then on, the peak after it too
        self.peak_after_ready = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(SAMPLE_SECONDS):
            with contextlib.suppress(psutil.Error, OSError):
                self.sample()

    def sample(self) -> None:
        if self.host.process is None:
            return
        now = time.time() - self.launched
        total, parts = 0, {}
        alive = self.members()
        for pid, role in alive.items():
            with contextlib.suppress(OSError, ValueError, KeyError):  # KeyError: a zombie
                rss, hwm = _rss_and_high_water(pid)
                entry = self.processes.setdefault(pid, ProcessPeak(role, now))
                if entry.role == "worker" and role == "torch helper":
                    entry.role = role  # it imported torch after its first sample
                entry.peak = max(entry.peak, hwm, rss)
                total += rss
                parts[entry.role] = parts.get(entry.role, 0) + rss
        if total > self.peak:
            self.peak, self.peak_s, self.peak_parts = total, now, parts
        if self.ready_s is not None:
            self.peak_after_ready = max(self.peak_after_ready, total)

    def members(self) -> dict[int, str]:
        """Every process of the host now, with its role."""
        host = psutil.Process(self.host.process.pid)
        members = {host.pid: "host"}
        for child in host.children(recursive=True):
            members[child.pid] = _role(child)
        with contextlib.suppress(OSError, ValueError, psutil.Error):
            postmaster = psutil.Process(self.host.postmaster_pid())
            for process in [postmaster, *postmaster.children(recursive=True)]:
                members[process.pid] = "postgres"
        return members

    def stop(self) -> dict:
        """Stop sampling; the figures, in MiB."""
        self.stopping.set()
        self.join(timeout=5)
        roles: dict[str, list[tuple[float, float]]] = {}
        for entry in self.processes.values():
            roles.setdefault(entry.role, []).append((entry.peak / MIB, entry.started_s))
        return {
            "peak": self.peak / MIB,
            "peak_s": self.peak_s,
            "peak_after_ready": self.peak_after_ready / MIB,
            "peak_parts": {role: rss / MIB for role, rss in self.peak_parts.items()},
            "roles": {role: sorted(peaks, key=lambda p: p[1]) for role, peaks in roles.items()},
        }


def _role(process: psutil.Process) -> str:
    command = " ".join(process.cmdline())
    if "spawn_main" not in command:
        return "other"  # multiprocessing's resource tracker
    maps = Path(f"/proc/{process.pid}/maps").read_text()
    return "torch helper" if "libtorch_cpu" in maps else "worker"


def _rss_and_high_water(pid: int) -> tuple[int, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


def memory_rows(memory: dict) -> list[tuple[str, str]]:
    """The whole host's memory as rows of bench/host.py's table."""
    roles = memory["roles"]

    def peaks(role: str) -> str:
        return ", ".join(
            f"{peak:.0f}" + (f" (from {started:.0f} s)" if role == "worker" else "")
            for peak, started in roles.get(role, [])
        )

    postgres = roles.get("postgres", [])
    parts = ", ".join(f"{role} {mib:.0f}" for role, mib in sorted(memory["peak_parts"].items()))
    return [
        (
            "**whole host's peak RSS (sum over its processes)**",
            f"**{memory['peak']:.0f} MiB** at {memory['peak_s']:.0f} s after launch ({parts})",
        ),
        (
            "whole host's peak RSS from ready on (analyzing)",
            f"{memory['peak_after_ready']:.0f} MiB",
        ),
        ("peak RSS of the host process", f"{peaks('host')} MiB"),
        ("peak RSS per worker (MiB), start after launch", peaks("worker") or "-"),
        ("CLAP's export process (torch) peak RSS", f"{peaks('torch helper') or '-'} MiB"),
        (
            "PostgreSQL: processes, largest peak, sum of peaks",
            f"{len(postgres)}, {max((p[0] for p in postgres), default=0):.0f} MiB, "
            f"{sum(p[0] for p in postgres):.0f} MiB",
        ),
        ("other helpers' peak RSS (MiB)", peaks("other") or "-"),
    ]


def comparison(runs: list[tuple[str, dict]]) -> None:
    """One table of the runs side by side (bench/host.py --analyzer each)."""
    print("\n### MusiCNN alone, CLAP alone and both, same tracks, fresh data dirs\n")
    print(
        "| run | start -> ready | ready -> all MusiCNN tags | ready -> all CLAP done "
        "| **whole host's peak RSS** | at | from ready on | host process | export process "
        "| workers | PostgreSQL (sum) |\n|---|---|---|---|---|---|---|---|---|---|---|"
    )
    for label, result in runs:
        memory, roles = result["memory"], result["memory"]["roles"]
        done = {
            name: f"{finishes[-1][0] - result['started']:.1f} s"
            for name, finishes in result["finishes"].items()
        }
        host, helper, workers = (_peaks(roles, role) for role in ("host", "torch helper", "worker"))
        postgres = sum(peak for peak, _ in roles.get("postgres", []))
        print(
            f"| {label} | {result['ready_s']:.1f} s | {done.get('musicnn', '-')} "
            f"| {done.get('clap', '-')} | **{memory['peak']:.0f} MiB** "
            f"| {memory['peak_s']:.0f} s | {memory['peak_after_ready']:.0f} | {host} | {helper} "
            f"| {workers} | {postgres:.0f} |"
        )
    print("\nMemory in MiB. The whole host's peak: the largest sum of every process's RSS at one")
    print("0.1-s sample; the others: each process's own high-water mark (VmHWM).")


def _peaks(roles: dict, role: str) -> str:
    return ", ".join(f"{peak:.0f}" for peak, _ in roles.get(role, [])) or "-"
