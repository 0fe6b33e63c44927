"""Chaos: the whole host and its embedded PostgreSQL killed with SIGKILL in the middle of
analysis, as a power cut or an OOM-killed container would, then started again on the same
data dir. Every track ends analyzed exactly once and none failed.

A real `soundspan-host serve` process, its real embedded PostgreSQL (the postmaster runs in a
session of its own, so it is found from its pid file), real encoded audio (the MusiCNN fixture
clips and tones PyAV encodes) and the real MusiCNN analyzer with its trained weights: a handful
of short clips keeps it affordable on two cores, and a real analyzer's pool processes are part
of what gets killed.

"Exactly once" is checked where the result is stored: a row trigger the test puts on
musicnn_results logs every insert and update, in the transaction that stores the result and
marks its job done, so a store that did not commit leaves no line. Each content has one line.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
from pathlib import Path

import psutil
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from soundspan_host.database.embedded import listening_endpoints
from soundspan_host.database.embedded_access import host_url, read_secret
from tests.library import eventually, rows, scalar
from tests.processes import DrainedProcess, start_host_process
from tests.tagged_audio import encode_tone

FIXTURES = Path(__file__).parent / "fixtures" / "musicnn"
CLIPS = ("anttis_1918.mp3", "anttis_funkyrobot_16k.flac", "anttis_funkyrobot.opus")
TONES = {"tone-220.mp3": 220, "tone-330.flac": 330, "tone-495.ogg": 495}
TRACKS = len(CLIPS) + len(TONES)
HOST_SETTINGS = {
    "SOUNDSPAN_MUSICNN__ENABLED": "true",
    "SOUNDSPAN_MUSICNN__DEVICE": "cpu",
    "SOUNDSPAN_MUSICNN__WORKERS": "2",
    "SOUNDSPAN_MUSICNN__SLEEP_INTERVAL": "0.2",
    "SOUNDSPAN_WATCHER__DEBOUNCE_SECONDS": "0.2",
    # a lease renewed every 2 s: a loaded machine keeps it, and after the crash the jobs the
    # dead host held are taken up again soon
    "SOUNDSPAN_ANALYSIS_LEASE_SECONDS": "6",
}
STORE_LOG = (
    "CREATE TABLE chaos_stores (id serial PRIMARY KEY, content_id text NOT NULL)",
    "CREATE FUNCTION chaos_log_store() RETURNS trigger LANGUAGE plpgsql AS"
    " $$ BEGIN INSERT INTO chaos_stores (content_id) VALUES (NEW.content_id); RETURN NEW; END $$",
    "CREATE TRIGGER chaos_log_store AFTER INSERT OR UPDATE ON musicnn_results"
    " FOR EACH ROW EXECUTE FUNCTION chaos_log_store()",
)


@pytest.fixture
def hosts():
    """Host processes started by the test; any still running at its end is stopped cleanly
    (thawed first, if the test failed while they were frozen), so it stops its database."""
    started: list[DrainedProcess] = []
    yield started
    for process in started:
        if process.poll() is None:
            tree = psutil.Process(process.pid)
            for frozen in [tree, *tree.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    frozen.send_signal(signal.SIGCONT)
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        process.communicate(timeout=30)


async def test_a_host_and_its_database_killed_mid_analysis_end_with_each_track_analyzed_once(
    tmp_path, hosts
):
    music_dir = tmp_path / "music"
    music_dir.mkdir()
    data_dir = tmp_path / "data"
    host = _start_host(tmp_path, music_dir, hosts)
    engine = _database_of(data_dir)
    try:
        for statement in STORE_LOG:  # before the first file arrives: every store is logged
            await _execute(engine, statement)
        # made beside the library and moved in whole, as a download client does: this test
        # is about the crash, not about files read while half written
        incoming = tmp_path / "incoming"
        incoming.mkdir()
        for clip in CLIPS:
            shutil.copy(FIXTURES / clip, incoming / clip)
        for name, frequency in TONES.items():
            encode_tone(incoming / name, seconds=8.0, frequency=frequency)
        for made in incoming.iterdir():
            made.rename(music_dir / made.name)

        await eventually(lambda: _mid_analysis(engine), timeout=120, what="mid-analysis")
        frozen = await eventually(
            lambda: _frozen_between_transactions(engine, host), timeout=60, what="a clean freeze"
        )
        interrupted = await _contents(
            engine, "SELECT content_id FROM analysis_jobs WHERE state = 'running'"
        )
        stored_before = await _contents(engine, "SELECT content_id FROM chaos_stores")
        done_before = await _contents(
            engine, "SELECT content_id FROM analysis_jobs WHERE state = 'done'"
        )
        await engine.dispose()
        await _kill_all(frozen + _database_tree(data_dir))
        host.wait(timeout=30)

        host = _start_host(tmp_path, music_dir, hosts)
        await eventually(lambda: _all_done(engine), timeout=180, what="analysis after the crash")
        jobs = {
            row.content_id: row
            for row in await rows(
                engine, "SELECT content_id, state, attempts, error FROM analysis_jobs"
            )
        }
        stores = await rows(
            engine, "SELECT content_id, count(*) AS stores FROM chaos_stores GROUP BY content_id"
        )
        results = await scalar(engine, "SELECT count(*) FROM musicnn_results")
    finally:
        await engine.dispose()
    host.terminate()  # it stops its database: read above, while it ran
    assert host.wait(timeout=60) == 0, host.output()
    assert "removing a stale" in host.output()  # the dead server's postmaster.pid

    assert interrupted and done_before, "the kill must land between finished and running jobs"
    assert stored_before == done_before  # a result is stored with its job's completion
    assert len(jobs) == TRACKS and results == TRACKS
    assert {(row.state, row.error) for row in jobs.values()} == {("done", None)}
    assert {row.content_id: row.stores for row in stores} == dict.fromkeys(jobs, 1)
    # the attempt the kill cut short counts (a file that kills its host must end failed);
    # no other job paid for the crash
    assert {content for content, row in jobs.items() if row.attempts == 2} == interrupted
    assert {row.attempts for content, row in jobs.items() if content not in interrupted} == {1}


def _start_host(tmp_path: Path, music_dir: Path, hosts: list[DrainedProcess]) -> DrainedProcess:
    host, port = start_host_process(tmp_path, music_dir, **HOST_SETTINGS)
    hosts.append(host)
    assert port is not None, host.communicate(timeout=30)[0]
    return host


def _database_of(data_dir: Path) -> AsyncEngine:
    """An engine on the host's embedded database, through its private socket (the test runs
    as the host's user, or root). The socket's folder and name stay the same at each start."""
    [(socket_dir, port), *_] = listening_endpoints(data_dir)
    return create_async_engine(
        host_url(read_secret(data_dir), Path(socket_dir), port), pool_pre_ping=True
    )


async def _execute(engine: AsyncEngine, statement: str) -> None:
    async with engine.begin() as connection:
        await connection.execute(text(statement))


async def _contents(engine: AsyncEngine, query: str) -> set[str]:
    return {row.content_id for row in await rows(engine, query)}


async def _mid_analysis(engine: AsyncEngine) -> bool:
    """Some jobs done, some running, some still waiting: the kill lands in the thick of it."""
    states = dict(
        await rows(
            engine,
            "SELECT state, count(*) FROM analysis_jobs WHERE analyzer = 'musicnn' GROUP BY state",
        )
    )
    return bool(states.get("done") and states.get("running") and states.get("pending"))


async def _frozen_between_transactions(
    engine: AsyncEngine, host: DrainedProcess
) -> list[psutil.Process]:
    """The host and its pool processes, stopped (SIGSTOP) while none of the host's database
    sessions is inside a transaction: what the database holds is then exactly what the kill
    interrupts. Else they run on a little, and []."""
    tree = [psutil.Process(host.pid), *psutil.Process(host.pid).children(recursive=True)]
    for process in tree:
        process.send_signal(signal.SIGSTOP)
    await eventually(lambda: _stopped(tree), what="the freeze")
    busy = await scalar(
        engine,
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
        " AND pid <> pg_backend_pid() AND state <> 'idle'",
    )
    if busy == 0:
        return tree
    for process in tree:
        process.send_signal(signal.SIGCONT)
    return []


async def _stopped(processes: list[psutil.Process]) -> bool:
    return all(process.status() == psutil.STATUS_STOPPED for process in processes)


def _database_tree(data_dir: Path) -> list[psutil.Process]:
    """The embedded postmaster (named by its pid file) and every server process under it."""
    pgdata = (data_dir / "postgres").resolve()
    postmaster = psutil.Process(int((pgdata / "postmaster.pid").read_text().split()[0]))
    assert postmaster.name() == "postgres"
    return [postmaster, *postmaster.children(recursive=True)]


async def _kill_all(processes: list[psutil.Process]) -> None:
    """SIGKILL every one at once, and wait until each is gone (or a zombie nobody reaps)."""
    for process in processes:
        process.send_signal(signal.SIGKILL)
    await eventually(lambda: _gone(processes), what="every process killed")


async def _gone(processes: list[psutil.Process]) -> bool:
    for process in processes:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True


async def _all_done(engine: AsyncEngine) -> bool:
    present = await scalar(engine, "SELECT count(*) FROM tracks WHERE missing_since IS NULL")
    done = await scalar(
        engine, "SELECT count(*) FROM analysis_jobs WHERE analyzer = 'musicnn' AND state = 'done'"
    )
    return present == TRACKS and done == TRACKS
