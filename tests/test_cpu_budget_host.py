"""A real host with both analyzers on `auto`, on a process limited to two CPUs, starts one pool
worker each (not the two each it once started whatever the machine), and its status and
`doctor` say how the CPUs were split."""

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import psutil
import pytest

from soundspan_hooks import HOST
from soundspan_host.cli_tables import analyzer_notes
from soundspan_host.doctor import run_checks
from tests.harness.clap_models import save_tiny_clap
from tests.harness.library import eventually

# no `workers` line: both analyzers take their default
ON_CPU = '[musicnn]\nprecision = "fp32"\ndevice = "cpu"\n[clap]\ndevice = "cpu"\n'


@pytest.fixture(scope="module")
def tiny_clap_dir(tmp_path_factory):
    return save_tiny_clap(tmp_path_factory.mktemp("clap") / "tiny-clap", projection_dim=512)


@contextmanager
def running_on(cpus: set[int]):
    """This process (its main thread, and the processes and threads it starts meanwhile) on
    `cpus` only."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def pool_processes() -> set[int]:
    """The spawned worker processes of this process's model pools."""
    found = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if any("spawn_main" in part for part in child.cmdline()):
                found.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    return found


async def test_a_host_on_two_cpus_runs_one_worker_per_analyzer_and_says_so(
    fast_host, monkeypatch, tiny_clap_dir, tmp_path
):
    monkeypatch.setenv("SOUNDSPAN_MUSICNN__ENABLED", "true")
    monkeypatch.setenv("SOUNDSPAN_CLAP__ENABLED", "true")
    monkeypatch.setenv("SOUNDSPAN_CLAP__MODEL", str(tiny_clap_dir))

    two_cpus = set(sorted(os.sched_getaffinity(0))[:2])
    before = pool_processes()
    with running_on(two_cpus):
        client = await fast_host(ON_CPU)

        async def both_ready():
            status = await (await client.get("/api/vibe/status")).json()
            analyzers = {entry["name"]: entry for entry in status["analyzers"]}
            ready = all(entry["state"] == "ready" for entry in analyzers.values())
            return analyzers if ready and len(analyzers) == 2 else None

        analyzers = await eventually(both_ready, timeout=180, what="MusiCNN and CLAP ready")
        assert len(pool_processes() - before) == 2  # one MusiCNN worker, one CLAP worker
        # a thread of its own, started now: it runs on the CPUs of the thread that starts it
        with ThreadPoolExecutor(1) as doctor:
            found = await asyncio.get_running_loop().run_in_executor(
                doctor, run_checks, tmp_path / "settings.toml"
            )
        checks = {check.name: check for check in found}

    assert analyzers["musicnn"]["workers"] == analyzers["clap"]["workers"] == 1
    assert analyzers["musicnn"]["workers_from"].startswith("auto: 1 of ")
    assert analyzers["musicnn"]["workers_from"].endswith("shared with clap")
    assert "shared with musicnn" in analyzers["clap"]["workers_from"]
    shown = [line.renderable.plain for line in analyzer_notes(analyzers["clap"], 0, 0.0)]
    assert f"workers: 1 ({analyzers['clap']['workers_from']})" in shown  # soundspan-host status
    budget = checks["CPU budget"]
    assert budget.status == "ok"
    assert f"(affinity {len(two_cpus)}," in budget.detail
    assert budget.detail.endswith("musicnn 1, clap 1")
    described = {info.name: info for info in await client.app[HOST].describe_analyzers()}
    assert described["musicnn"].workers == described["clap"].workers == 1
