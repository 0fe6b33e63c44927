"""Scale-out without Docker: a host with its own embedded PostgreSQL listening on localhost and
two `soundspan-host worker` processes share one queue. The workers see the library under
another folder, as a second machine would mount it, and reach the database as a user would
tell them to: with the URL and the password the host's data dir holds. A worker left on an old
model takes none of the host's jobs, and the host can name it."""

import os
import signal
import time

import psutil
from sqlalchemy import text

from soundspan_hooks import HOST
from soundspan_host.app import create_app
from soundspan_host.database.embedded_access import worker_url
from soundspan_host.plugins import load_plugins
from soundspan_host.settings import read_settings
from soundspan_host.worker_registry import WorkerRegistry, outdated_workers
from tests.harness.fast_settings import with_quick_timings
from tests.harness.library import (
    eventually,
    jobs,
    jobs_running_in,
    rows,
    settled,
    stores_per_content,
    write_wav,
)
from tests.harness.processes import DrainedProcess, on_a_free_port_async, start_worker

TRACKS = 12
DELAY = "0.4"  # seconds per toy analysis: long enough that every process gets work
# renewed every third of it: a process starved for 4 s on a loaded machine keeps its jobs
LEASE = "6"


async def test_workers_on_the_hosts_embedded_database_share_the_work_and_lose_none_when_killed(
    toy_analyzer, echo_plugin, aiohttp_client, music_dir, tmp_path
):
    # echo brings migrations of its own: a worker must still migrate (or find) all branches
    # each process holds its first job until all three hold one: each stores at least one
    release = tmp_path / "release"
    settings_file = tmp_path / "host.toml"

    async def start(port: int):
        settings_file.write_text(
            with_quick_timings(
                f'music_dir = "{music_dir}"\ndata_dir = "{tmp_path / "data"}"\n'
                f"embedded_database_port = {port}\nanalysis_lease_seconds = {LEASE}\n"
                f"[toy]\nworkers = 1\ndelay_seconds = {DELAY}\n"
                f'hold_until = "{release}"\n'
            )
        )
        app = create_app(load_plugins(read_settings(settings_file)))
        return await aiohttp_client(app), port

    client, port = await on_a_free_port_async(start)
    engine = client.app[HOST].engine
    database_url = worker_url(tmp_path / "data", port)
    # the same files under another path: each worker joins its own music dir to a job's
    # relative path, which is all a second machine's mount needs
    elsewhere = tmp_path / "elsewhere" / "library"
    elsewhere.mkdir(parents=True)
    workers = [
        start_worker(
            database_url,
            elsewhere,
            toy_analyzer,
            LEASE,
            delay_seconds=DELAY,
            hold_until=str(release),
        )
        for _ in range(2)
    ]
    doomed, survivor = workers
    try:
        await eventually(lambda: _ready(workers), timeout=60, what="two workers")
        for number in range(TRACKS):
            relative = f"Artist {number % 3}/Album/{number:02}.wav"
            write_wav(elsewhere / relative, 300 + 10 * number)
            (music_dir / relative).parent.mkdir(parents=True, exist_ok=True)
            os.link(elsewhere / relative, music_dir / relative)
        processes = [os.getpid(), doomed.pid, survivor.pid]  # the host analyzes in the test's
        await eventually(
            lambda: _each_holds_a_job(engine, processes), timeout=60, what="a job in each process"
        )
        release.touch()
        await eventually(lambda: _stored_by(engine, doomed.pid), what="the doomed worker's work")
        held = await eventually(
            lambda: _frozen_mid_job(engine, doomed, port), what="the doomed worker mid-job"
        )
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
        await eventually(lambda: settled(engine, TRACKS), timeout=90, what="all analyzed")
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGCONT)  # a frozen worker would not see the TERM
                worker.terminate()
            worker.communicate(timeout=30)

    assert set((await stores_per_content(engine)).values()) == {1}
    assert len(await stores_per_content(engine)) == TRACKS
    assert {state for state, _ in (await jobs(engine)).values()} == {"done"}
    stored_by = {
        row.content_id: row.worker_pid
        for row in await rows(engine, "SELECT content_id, worker_pid FROM toy_stores")
    }
    assert set(stored_by.values()) == {os.getpid(), doomed.pid, survivor.pid}  # host, workers
    for content in held:  # what the kill interrupted was done again, by another process
        [job] = await rows(
            engine, "SELECT attempts FROM analysis_jobs WHERE content_id = :id", id=content
        )
        assert job.attempts == 2 and stored_by[content] != doomed.pid
    assert survivor.returncode == 0, survivor.output()


async def _ready(workers: list[DrainedProcess]) -> bool:
    for worker in workers:
        assert worker.poll() is None, worker.output()
    return all("analyzing with toy" in worker.output() for worker in workers)


async def _each_holds_a_job(engine, pids: list[int]) -> bool:
    held = [await jobs_running_in(engine, pid) for pid in pids]
    return all(held)


async def _stored_by(engine, pid: int) -> bool:
    return bool(await rows(engine, "SELECT 1 FROM toy_stores WHERE worker_pid = :pid", pid=pid))


async def _frozen_mid_job(engine, worker: DrainedProcess, database_port: int) -> list[str]:
    """The jobs `worker` holds, once it is frozen (SIGSTOP) while none of its database sessions
    is inside a transaction: it can then finish none of them. Else it runs on, and []."""
    worker.send_signal(signal.SIGSTOP)
    process = psutil.Process(worker.pid)
    await eventually(lambda: _stopped(process), what="the freeze")
    ports = [
        connection.laddr.port
        for connection in process.net_connections(kind="tcp")
        if connection.raddr and connection.raddr.port == database_port
    ]
    in_transaction = await rows(
        engine,
        "SELECT 1 FROM pg_stat_activity WHERE client_port = ANY(:ports) AND state <> 'idle'",
        ports=ports,
    )
    held = [] if in_transaction else await jobs_running_in(engine, worker.pid)
    if not held:
        worker.send_signal(signal.SIGCONT)
    return held


async def _stopped(process: psutil.Process) -> bool:
    return process.status() == psutil.STATUS_STOPPED


async def test_a_worker_left_on_an_old_model_is_named_until_it_stops_or_ages_out(
    fast_host, toy_analyzer, music_dir, database_url, tmp_path
):
    # the host has toy version toy-2 (no env value that reads as a number) and analyzes nothing
    client = await fast_host('[toy]\nversion = "toy-2"\nworkers = 0\n')
    engine = client.app[HOST].engine
    release = tmp_path / "release"
    current = start_worker(
        database_url, music_dir, toy_analyzer, version="toy-2", hold_until=str(release)
    )
    outdated = start_worker(database_url, music_dir, toy_analyzer, version="toy-1")
    try:
        named = await eventually(
            lambda: _named_outdated(engine, [current, outdated]), timeout=60, what="both seen"
        )
        assert [(worker["version"], _pid(worker)) for worker in named] == [("toy-1", outdated.pid)]
        assert abs(named[0]["last_seen"] - time.time()) < 60

        write_wav(music_dir / "new.wav", 700)  # held in the current worker meanwhile
        await eventually(lambda: _said(outdated, "jobs wait for model version toy-2"), 60)
        release.touch()
        await eventually(lambda: settled(engine, 1), timeout=60, what="the current worker's job")

        # killed, it cannot say it stopped: named until it ages out, then purged
        outdated.send_signal(signal.SIGKILL)
        outdated.wait()
        assert [_pid(worker) for worker in await _outdated(engine)] == [outdated.pid]
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "UPDATE analysis_workers SET last_seen = now() - interval '6 minutes'"
                    " WHERE owner LIKE :owner"
                ),
                {"owner": f"%:{outdated.pid}:%"},
            )
        assert await _outdated(engine) == []
        probe = WorkerRegistry(engine, owner=f"test:{os.getpid()}:probe")
        await probe.seen_working("toy", "toy-2")  # any worker's refresh purges the aged rows
        await probe.stopped_working("toy")
        assert await _registered_pids(engine) == [current.pid]

        current.terminate()  # a clean stop leaves the registry at once
        current.communicate(timeout=30)
        assert current.returncode == 0, current.output()
        assert await _registered_pids(engine) == []
    finally:
        release.touch()
        for worker in (current, outdated):
            if worker.poll() is None:
                worker.terminate()
            worker.communicate(timeout=30)


async def _outdated(engine) -> list[dict]:
    return (await outdated_workers(engine, {"toy": "toy-2"})).get("toy", [])


async def _named_outdated(engine, workers: list[DrainedProcess]) -> list[dict]:
    """The outdated workers, once every one of `workers` has registered."""
    for worker in workers:
        assert worker.poll() is None, worker.output()
    if len(await _registered_pids(engine)) < len(workers):
        return []
    return await _outdated(engine)


async def _registered_pids(engine) -> list[int]:
    owners = await rows(engine, "SELECT owner FROM analysis_workers ORDER BY owner")
    return [int(row.owner.split(":")[1]) for row in owners]


async def _said(worker: DrainedProcess, words: str) -> bool:
    return words in worker.output()


def _pid(worker: dict) -> int:
    return int(worker["worker"].split(":")[1])
