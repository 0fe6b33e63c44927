"""The queue under faults: downtime, a killed worker process, a restarted database, a new
model version. Real processes, a real PostgreSQL, the toy analyzer."""

import asyncio
import os
import signal

import pytest

from soundspan_hooks import HOST
from soundspan_host.app import create_app
from soundspan_host.database import async_url
from soundspan_host.database.embedded import EmbeddedPostgres
from soundspan_host.errors import ConfigError
from soundspan_host.plugins import load_plugins
from soundspan_host.queue import AnalysisQueue, QueuePolicy, queued_reasons, retry_failed
from soundspan_host.settings import read_settings
from soundspan_host.worker_registry import WorkerRegistry
from tests.harness.fast_settings import with_quick_timings
from tests.harness.library import (
    eventually,
    jobs,
    jobs_running_in,
    present_paths,
    rows,
    settled,
    stores_per_content,
    tracks,
    write_wav,
)
from tests.harness.processes import start_worker


async def test_changes_made_while_the_host_was_down_are_found(fast_host, toy_analyzer, music_dir):
    client = await fast_host()
    engine = client.app[HOST].engine
    for name, frequency in [("keep", 100), ("move", 200), ("delete", 300), ("edit", 400)]:
        write_wav(music_dir / f"{name}.wav", frequency)
    await eventually(lambda: settled(engine, 4))
    before = await tracks(engine)
    await client.close()

    os.rename(music_dir / "move.wav", music_dir / "moved.wav")
    (music_dir / "delete.wav").unlink()
    write_wav(music_dir / "edit.wav", 450, seconds=0.3)
    write_wav(music_dir / "new.wav", 500)

    client = await fast_host()
    engine = client.app[HOST].engine
    expected = {"keep.wav", "moved.wav", "edit.wav", "new.wav"}
    await eventually(lambda: present_paths(engine, expected), what="the reconcile")
    await eventually(lambda: settled(engine, 4))
    after = await tracks(engine)
    assert after["keep.wav"] == before["keep.wav"]
    assert after["moved.wav"] == before["move.wav"]  # same id, same content: no re-analysis
    assert after["delete.wav"][2] is True  # marked gone, kept for the grace period
    assert after["edit.wav"][0] == before["edit.wav"][0]
    assert after["edit.wav"][1] != before["edit.wav"][1]
    assert set((await stores_per_content(engine)).values()) == {1}
    assert len(await stores_per_content(engine)) == 6  # the first four, the edit, the new one


async def test_scan_on_demand_over_http(fast_host, toy_analyzer, music_dir):
    write_wav(music_dir / "before.wav", 600)  # present before start, never notified
    client = await fast_host("[watcher]\nreconcile_on_start = false\n")
    engine = client.app[HOST].engine
    write_wav(music_dir / "after.wav", 650)  # the watcher runs: a new file is catalogued
    await eventually(lambda: _catalogued(engine, "after.wav"), what="the new file")
    assert list(await tracks(engine)) == ["after.wav"]
    answer = await client.post("/api/library/scan")
    assert answer.status == 202
    assert await answer.json() in ({"scan": "started"}, {"scan": "already running"})
    await eventually(lambda: settled(engine, 2), what="the scan")


async def test_a_new_model_version_requeues_with_new_files_first(
    fast_host, toy_analyzer, music_dir, tmp_path
):
    client = await fast_host()
    engine = client.app[HOST].engine
    for number in range(6):
        write_wav(music_dir / f"old{number}.wav", 700 + number)
    await eventually(lambda: settled(engine, 6))
    await client.close()

    # one worker, its first re-analysis held until the new file waits in the queue
    release = tmp_path / "release"
    client = await fast_host(f'[toy]\nversion = "2"\nworkers = 1\nhold_until = "{release}"\n')
    engine = client.app[HOST].engine
    write_wav(music_dir / "new.wav", 800)
    try:
        await eventually(lambda: _pending(engine, "new.wav"), what="the new file's job")
    finally:
        release.touch()
    await eventually(lambda: settled(engine, 7), timeout=60)

    order = [
        row.content_id
        for row in await rows(engine, "SELECT content_id FROM toy_stores ORDER BY id")
    ]
    new_content = (await tracks(engine))["new.wav"][1]
    versions = {row.version for row in await rows(engine, "SELECT version FROM toy_results")}
    assert versions == {"2"}
    assert len(order) == 13  # six analyzed twice, the new one once
    assert order[6:].index(new_content) <= 1  # at most one re-analysis was already under way


async def test_a_worker_killed_mid_job_loses_nothing_and_runs_it_once(
    fast_host, toy_analyzer, music_dir, database_url
):
    # this host only catalogues; worker processes analyze
    client = await fast_host("[toy]\nworkers = 0\n")
    engine = client.app[HOST].engine
    # its job waits for a file that never comes: the kill lands mid-job
    never = str(music_dir.parent / "never")
    doomed = start_worker(database_url, music_dir, toy_analyzer, hold_until=never)
    survivor = None
    try:
        write_wav(music_dir / "victim.wav", 900)
        await eventually(lambda: jobs_running_in(engine, doomed.pid), timeout=60, what="a claim")
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
        survivor = start_worker(database_url, music_dir, toy_analyzer, delay_seconds="0")
        await eventually(lambda: settled(engine, 1), timeout=60, what="the takeover")
    finally:
        for process in (doomed, survivor):
            if process is not None and process.poll() is None:
                process.terminate()
                process.communicate(timeout=30)
    [content_id] = (await jobs(engine)).keys()
    assert await stores_per_content(engine) == {content_id: 1}
    [stored] = await rows(engine, "SELECT worker_pid FROM toy_results")
    assert stored.worker_pid == survivor.pid
    [job] = await rows(engine, "SELECT attempts, state FROM analysis_jobs")
    assert (job.attempts, job.state) == (2, "done")
    assert survivor.returncode == 0  # SIGTERM is a clean stop


@pytest.fixture
def own_server(tmp_path):
    server = EmbeddedPostgres(tmp_path / "own-db", port=0)
    server.start()
    yield server
    server.stop()


async def test_a_restarted_database_loses_and_duplicates_nothing(
    own_server, toy_analyzer, aiohttp_client, music_dir, tmp_path, caplog
):
    settings_file = tmp_path / "restart.toml"
    settings_file.write_text(
        with_quick_timings(
            f'music_dir = "{music_dir}"\ndatabase_url = "{own_server.url}"\n'
            "analysis_retry_delay_seconds = 0.2\nanalysis_lease_seconds = 2\n"
            "[toy]\ndelay_seconds = 0.1\nworkers = 2\n"
        )
    )
    client = await aiohttp_client(create_app(load_plugins(read_settings(settings_file))))
    engine = client.app[HOST].engine
    for number in range(20):
        write_wav(music_dir / f"{number:02}.wav", 1000 + number)
    await eventually(lambda: _queued(engine, 20), what="20 queued jobs")
    assert (await client.get("/api/tracks")).status == 200  # the reader's pool holds a connection

    port = own_server.port
    await asyncio.to_thread(own_server.stop)
    write_wav(music_dir / "during.wav", 2000)  # a change while the database is away
    await eventually(
        lambda: _logged(caplog, "cannot reach the queue", "could not record a library change"),
        what="a worker and the watcher to meet the dead database",
    )
    own_server.requested_port = port
    await asyncio.to_thread(own_server.start)

    await eventually(lambda: settled(engine, 21), timeout=90, what="recovery")
    counts = await stores_per_content(engine)
    assert len(counts) == 21 and set(counts.values()) == {1}
    assert {state for state, _ in (await jobs(engine)).values()} == {"done"}
    # the API's reads (the autocommit reader's pool) find the new server too, at once
    answer = await client.get("/api/tracks", params={"limit": 50})
    assert answer.status == 200, await answer.text()
    assert (await answer.json())["total"] == 21


async def _queued(engine, count):
    return len(await jobs(engine)) == count


async def _catalogued(engine, path):
    return path in await tracks(engine)


async def _pending(engine, path):
    track = (await tracks(engine)).get(path)
    return track is not None and (await jobs(engine)).get(track[1], ("",))[0] == "pending"


async def _logged(caplog, *messages):
    logged = " ".join(record.getMessage() for record in caplog.records)
    return all(message in logged for message in messages)


def test_database_urls_in_the_usual_spellings_and_bad_ones():
    assert async_url("postgres://u:p@h/d") == "postgresql+asyncpg://u:p@h/d"
    assert async_url("postgresql://h/d") == "postgresql+asyncpg://h/d"
    with pytest.raises(ConfigError, match="must be a PostgreSQL URL"):
        async_url("mysql://h/d")
    with pytest.raises(ConfigError, match="is not a database URL"):
        async_url("just some words")


async def test_tracks_gone_past_the_grace_period_are_forgotten_with_their_analyses(
    fast_host, toy_analyzer, music_dir
):
    client = await fast_host()
    engine = client.app[HOST].engine
    write_wav(music_dir / "kept.wav", 1500)
    write_wav(music_dir / "gone.wav", 1600)
    await eventually(lambda: settled(engine, 2))
    gone_content = (await tracks(engine))["gone.wav"][1]
    (music_dir / "gone.wav").unlink()
    await eventually(lambda: present_paths(engine, {"kept.wav"}), what="the deletion")
    await client.close()

    # a grace of zero: the purge that runs at start-up forgets it at once
    client = await fast_host("missing_track_grace_days = 0\n")
    engine = client.app[HOST].engine
    await eventually(lambda: _forgotten(engine, "gone.wav"), what="the purge")
    assert list(await tracks(engine)) == ["kept.wav"]
    for table in ("contents", "analysis_jobs", "toy_results"):
        column = "id" if table == "contents" else "content_id"
        leftovers = await rows(
            engine, f"SELECT 1 FROM {table} WHERE {column} = :content", content=gone_content
        )
        assert leftovers == [], table


async def _forgotten(engine, path):
    return path not in await tracks(engine)


async def test_the_queue_says_why_each_job_waits(fast_host, toy_analyzer, music_dir):
    # this host only catalogues (toy version 1); the test works the queue as a worker would
    client = await fast_host("[toy]\nworkers = 0\n")
    engine = client.app[HOST].engine
    for name, frequency in [("a", 100), ("b", 200), ("c", 300)]:
        write_wav(music_dir / f"{name}.wav", frequency)
    await eventually(lambda: _queued(engine, 3), what="three new files queued")
    assert await queued_reasons(engine) == {"toy": [{"reason": "new or changed audio", "jobs": 3}]}

    queue = AnalysisQueue(engine, QueuePolicy(), owner=f"test:{os.getpid()}:reasons")
    done, flaky, broken = await queue.claim("toy", "1", 3)
    await queue.complete(done, _store_nothing)
    await queue.fail(flaky, "EIO", permanent=False)
    await queue.fail(broken, "not audio", permanent=True)
    assert await queued_reasons(engine) == {
        "toy": [{"reason": "retry after a failed attempt", "jobs": 1}]
    }
    assert await retry_failed(engine, "toy", None) == 1
    assert await queued_reasons(engine) == {
        "toy": [
            {"reason": "retried by hand", "jobs": 1},
            {"reason": "retry after a failed attempt", "jobs": 1},
        ]
    }
    # the status API says the same, and names a worker left on another model
    await WorkerRegistry(engine, "old-box:1:a").seen_working("toy", "0")
    toy = await _toy_status(client)
    assert toy["queued_because"] == (await queued_reasons(engine))["toy"]
    assert [worker["worker"] for worker in toy["outdated_workers"]] == ["old-box:1:a"]
    assert toy["outdated_workers"][0]["version"] == "0"

    # a new model for toy, and a second analyzer that never ran here
    await queue.requeue_outdated({"toy": "2", "other": "x1"})
    write_wav(music_dir / "d.wav", 400)  # the catalogue still queues toy version 1 for it
    await eventually(lambda: _queued(engine, 4), what="the new file queued")
    await queue.requeue_outdated({"toy": "2", "other": "x1"})
    assert await queued_reasons(engine) == {
        "other": [
            {"reason": "new analyzer", "jobs": 3},
            {"reason": "no result yet (added while the analyzer was off)", "jobs": 1},
        ],
        "toy": [{"reason": "model updated: 1 -> 2", "jobs": 4}],
    }
    # a gone track's job waits for nothing anyone needs: it is not counted
    (music_dir / "a.wav").unlink()
    await eventually(lambda: present_paths(engine, {"b.wav", "c.wav", "d.wav"}), what="gone")
    assert {reason["jobs"] for reason in (await queued_reasons(engine))["toy"]} == {3}


async def _toy_status(client) -> dict:
    answer = await client.get("/api/vibe/status")
    assert answer.status == 200
    return next(entry for entry in (await answer.json())["analyzers"] if entry["name"] == "toy")


async def _store_nothing(connection):
    """A result with nothing to store: this test is about the job, not the analysis."""
