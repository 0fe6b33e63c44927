"""Chaos: the whole host and its embedded PostgreSQL killed with SIGKILL in the middle of
analysis, as an OOM-killed container would, then started again on the same data dir: once at a
moment no database session is inside a transaction (so the test knows exactly which jobs the
kill cut short), once inside the transaction that stores a result, the rest of the host at a
moment left to chance. Every track ends analyzed exactly once and none failed. (A kill, not a
power cut: the machine's page cache survives it, so this says nothing about unflushed writes.)

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

import asyncio
import contextlib
import random
import shutil
import signal
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import psutil
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from soundspan_host.database.embedded import listening_endpoints
from soundspan_host.database.embedded_access import host_url, read_secret
from tests.harness.library import eventually, rows, scalar
from tests.harness.processes import DrainedProcess, start_host_process
from tests.harness.tagged_audio import encode_tone

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


async def test_a_host_and_its_database_killed_between_transactions_analyze_each_track_once(
    tmp_path, hosts
):
    """Killed at a moment no database session is inside a transaction: what was interrupted is
    then exactly the jobs the database shows running."""
    await _crash_and_recover(tmp_path, hosts, _frozen_between_transactions)


async def test_a_host_and_its_database_killed_inside_a_store_transaction_keep_results_with_jobs(
    tmp_path, hosts
):
    """Killed while the host is inside the transaction that marks a job done and stores its
    result (held there by a lock the test takes on musicnn_results), the rest of the host at a
    moment left to chance: no result without its job done, no job done without its result,
    neither before the crash nor after it."""
    blockers: list[AsyncEngine] = []
    locks: list[AsyncConnection] = []

    async def frozen_inside_a_store(engine: AsyncEngine, host: DrainedProcess):
        blockers.append(_database_of(tmp_path / "data"))
        locks.append(lock := await blockers[-1].connect())
        await lock.execute(text("LOCK TABLE musicnn_results IN SHARE MODE"))  # ends at the kill
        await eventually(lambda: _store_waiting(engine), timeout=120, what="a store mid-way")
        # the rest of the host runs on for a while of random length (pytest-randomly's seed)
        await asyncio.sleep(random.uniform(0, 2))
        return await _frozen(host)

    try:
        await _crash_and_recover(tmp_path, hosts, frozen_inside_a_store)
    finally:
        for lock in locks:
            with contextlib.suppress(Exception):  # its server was killed under it
                await lock.invalidate()
                await lock.close()
        for blocker in blockers:
            await blocker.dispose()


async def _crash_and_recover(
    tmp_path: Path,
    hosts: list[DrainedProcess],
    freeze: Callable[[AsyncEngine, DrainedProcess], Awaitable[list[psutil.Process]]],
) -> None:
    """Analysis under way, `freeze` stops the host's processes at its moment, the host and its
    database are killed, and a new host finishes: each track analyzed once, none failed."""
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
        frozen = await eventually(lambda: freeze(engine, host), timeout=120, what="a freeze")
        interrupted = await _contents(
            engine, "SELECT content_id FROM analysis_jobs WHERE state = 'running'"
        )
        stored_before = await _contents(engine, "SELECT content_id FROM chaos_stores")
        done_before = await _contents(
            engine, "SELECT content_id FROM analysis_jobs WHERE state = 'done'"
        )
        unpaired_before = await _unpaired(engine)
        await engine.dispose()
        await _kill_all(frozen + _database_tree(data_dir))
        host.wait(timeout=30)

        host = _start_host(tmp_path, music_dir, hosts)
        unpaired_after_restart = await _unpaired(engine)
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

    no_pairs_missing = {"results without their job done": [], "jobs done without a result": []}
    assert unpaired_before == no_pairs_missing
    assert unpaired_after_restart == no_pairs_missing
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
    tree = await _frozen(host)
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


async def _frozen(host: DrainedProcess) -> list[psutil.Process]:
    """The host and its pool processes, stopped (SIGSTOP): none commits anything more."""
    tree = []
    for process in [psutil.Process(host.pid), *psutil.Process(host.pid).children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):  # a helper process that just ended
            process.send_signal(signal.SIGSTOP)
            tree.append(process)
    await eventually(lambda: _stopped(tree), what="the freeze")
    return tree


async def _store_waiting(engine: AsyncEngine) -> bool:
    """A session of the host's waits for the lock on musicnn_results: inside the transaction
    that has marked its job done and now stores the result."""
    return bool(
        await scalar(
            engine,
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
            " AND wait_event_type = 'Lock' AND query ILIKE '%INSERT INTO musicnn_results%'",
        )
    )


async def _unpaired(engine: AsyncEngine) -> dict[str, list[str]]:
    """What the database holds that must never be: a result whose job is not done, or a done
    job without its result. Read in one snapshot (one statement)."""
    [row] = await rows(
        engine,
        "SELECT ARRAY(SELECT r.content_id FROM musicnn_results r JOIN analysis_jobs j"
        "  ON j.content_id = r.content_id AND j.analyzer = 'musicnn' WHERE j.state <> 'done'"
        " ) AS orphans, ARRAY(SELECT j.content_id FROM analysis_jobs j"
        "  WHERE j.analyzer = 'musicnn' AND j.state = 'done' AND NOT EXISTS"
        "  (SELECT 1 FROM musicnn_results r WHERE r.content_id = j.content_id)) AS empty",
    )
    return {"results without their job done": row.orphans, "jobs done without a result": row.empty}


async def _stopped(processes: list[psutil.Process]) -> bool:
    """Each one stopped, or ended (a helper process that was on its way out)."""
    for process in processes:
        try:
            if process.status() not in (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE):
                return False
        except psutil.NoSuchProcess:
            pass
    return True


def _database_tree(data_dir: Path) -> list[psutil.Process]:
    """The embedded postmaster (named by its pid file) and every server process under it."""
    pgdata = (data_dir / "postgres").resolve()
    postmaster = psutil.Process(int((pgdata / "postmaster.pid").read_text().split()[0]))
    assert postmaster.name() == "postgres"
    return [postmaster, *postmaster.children(recursive=True)]


async def _kill_all(processes: list[psutil.Process]) -> None:
    """SIGKILL every one at once, and wait until each is gone (or a zombie nobody reaps)."""
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
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
