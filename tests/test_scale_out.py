"""Scale-out without Docker: a host with its own embedded PostgreSQL listening on localhost and
two `soundspan-host worker` processes share one queue. The workers see the library under
another folder, as a second machine would mount it."""

import os
import signal

from soundspan_hooks import HOST
from soundspan_host.app import create_app
from soundspan_host.database.embedded import DATABASE_NAME, SUPERUSER
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


async def test_workers_on_the_hosts_embedded_database_share_the_work_and_lose_none_when_killed(
    toy_analyzer, echo_plugin, aiohttp_client, music_dir, tmp_path
):
    # echo brings migrations of its own: a worker must still migrate (or find) all branches
    port = free_port()
    settings_file = tmp_path / "host.toml"
    settings_file.write_text(
        f'music_dir = "{music_dir}"\ndata_dir = "{tmp_path / "data"}"\n'
        f"embedded_database_port = {port}\nanalysis_lease_seconds = 1.5\n"
        "[watcher]\ndebounce_seconds = 0.2\n"
        f"[toy]\nworkers = 1\ndelay_seconds = {DELAY}\npoll_interval = 0.2\n"
    )
    client = await aiohttp_client(create_app(load_plugins(read_settings(settings_file))))
    engine = client.app[HOST].engine
    database_url = f"postgresql://{SUPERUSER}@127.0.0.1:{port}/{DATABASE_NAME}"
    # the same files under another path: each worker joins its own music dir to a job's
    # relative path, which is all a second machine's mount needs
    elsewhere = tmp_path / "elsewhere" / "library"
    elsewhere.mkdir(parents=True)
    workers = [
        start_worker(database_url, elsewhere, toy_analyzer, delay_seconds=DELAY) for _ in range(2)
    ]
    doomed, survivor = workers
    try:
        await eventually(lambda: _ready(workers), timeout=60, what="two workers")
        for number in range(TRACKS):
            relative = f"Artist {number % 3}/Album/{number:02}.wav"
            write_wav(elsewhere / relative, 300 + 10 * number)
            (music_dir / relative).parent.mkdir(parents=True, exist_ok=True)
            os.link(elsewhere / relative, music_dir / relative)
        [killed_job, *_] = await eventually(
            lambda: _busy_after_work(engine, doomed.pid), what="the doomed worker's 2nd job"
        )
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
        await eventually(lambda: settled(engine, TRACKS), timeout=60, what="all analyzed")
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
            worker.communicate(timeout=30)

    assert set((await stores_per_content(engine)).values()) == {1}
    assert len(await stores_per_content(engine)) == TRACKS
    assert {state for state, _ in (await jobs(engine)).values()} == {"done"}
    analyzed_by = {
        row.worker_pid for row in await rows(engine, "SELECT worker_pid FROM toy_stores")
    }
    assert analyzed_by == {os.getpid(), doomed.pid, survivor.pid}  # the host and both workers
    [taken_over] = await rows(
        engine,
        "SELECT a.attempts, s.worker_pid FROM analysis_jobs a"
        " JOIN toy_stores s USING (content_id) WHERE content_id = :content",
        content=killed_job,
    )
    assert taken_over.attempts == 2 and taken_over.worker_pid != doomed.pid
    assert survivor.returncode == 0, survivor.output()


async def _ready(workers: list[DrainedProcess]) -> bool:
    for worker in workers:
        assert worker.poll() is None, worker.output()
    return all("analyzing with toy" in worker.output() for worker in workers)


async def _busy_after_work(engine, pid: int) -> list[str]:
    """The jobs `pid` holds, once it has stored a result: a kill now lands mid-run."""
    stored = await rows(engine, "SELECT 1 FROM toy_stores WHERE worker_pid = :pid", pid=pid)
    return await jobs_running_in(engine, pid) if stored else []
