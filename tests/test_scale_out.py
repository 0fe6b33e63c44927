"""Scale-out without Docker: a host with its own embedded PostgreSQL listening on localhost and
two `soundspan-host worker` processes share one queue. The workers see the library under
another folder, as a second machine would mount it, and reach the database as a user would
tell them to: with the URL and the password the host's data dir holds."""

import os
import signal

import psutil

from soundspan_hooks import HOST
from soundspan_host.app import create_app
from soundspan_host.database.embedded_access import worker_url
from soundspan_host.plugins import load_plugins
from soundspan_host.settings import read_settings
from tests.library import (
    eventually,
    jobs,
    jobs_running_in,
    rows,
    settled,
    stores_per_content,
    write_wav,
)
from tests.processes import DrainedProcess, free_port, start_worker

TRACKS = 12
DELAY = "0.4"  # seconds per toy analysis: long enough that every process gets work
# renewed every third of it: a process starved for 4 s on a loaded machine keeps its jobs
LEASE = "6"


async def test_workers_on_the_hosts_embedded_database_share_the_work_and_lose_none_when_killed(
    toy_analyzer, echo_plugin, aiohttp_client, music_dir, tmp_path
):
    # echo brings migrations of its own: a worker must still migrate (or find) all branches
    port = free_port()
    settings_file = tmp_path / "host.toml"
    settings_file.write_text(
        f'music_dir = "{music_dir}"\ndata_dir = "{tmp_path / "data"}"\n'
        f"embedded_database_port = {port}\nanalysis_lease_seconds = {LEASE}\n"
        "[watcher]\ndebounce_seconds = 0.2\n"
        f"[toy]\nworkers = 1\ndelay_seconds = {DELAY}\npoll_interval = 0.2\n"
    )
    client = await aiohttp_client(create_app(load_plugins(read_settings(settings_file))))
    engine = client.app[HOST].engine
    database_url = worker_url(tmp_path / "data", port)
    # the same files under another path: each worker joins its own music dir to a job's
    # relative path, which is all a second machine's mount needs
    elsewhere = tmp_path / "elsewhere" / "library"
    elsewhere.mkdir(parents=True)
    workers = [
        start_worker(database_url, elsewhere, toy_analyzer, LEASE, delay_seconds=DELAY)
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
    assert doomed.pid in stored_by.values()
    assert set(stored_by.values()) <= {os.getpid(), doomed.pid, survivor.pid}  # host, workers
    for content in held:  # what the kill interrupted was done again, by another process
        [job] = await rows(
            engine, "SELECT attempts FROM analysis_jobs WHERE content_id = :id", id=content
        )
        assert job.attempts >= 2 and stored_by[content] != doomed.pid
    assert survivor.returncode == 0, survivor.output()


async def _ready(workers: list[DrainedProcess]) -> bool:
    for worker in workers:
        assert worker.poll() is None, worker.output()
    return all("analyzing with toy" in worker.output() for worker in workers)


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
