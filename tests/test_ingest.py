"""Ingest end to end: files in a real folder, the watcher, the catalogue, the queue, the toy
analyzer and a real PostgreSQL. Nobody presses "scan"."""

import os
import shutil
import subprocess
import sys

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from soundspan_hooks import HOST
from soundspan_host.database import async_url
from tests.harness.library import (
    eventually,
    jobs,
    present_paths,
    scalar,
    settled,
    stores_per_content,
    tracks,
    write_wav,
)
from tests.harness.processes import start_host_process, wait_healthy


async def test_a_dropped_file_is_catalogued_and_analyzed(fast_host, toy_analyzer, music_dir):
    engine = (await fast_host()).app[HOST].engine
    write_wav(music_dir / "Artist" / "Album" / "01 tone.wav", 440)
    await eventually(lambda: settled(engine, 1), what="the file to be analyzed")

    [(path, (track_id, content_id, missing))] = (await tracks(engine)).items()
    assert path == "Artist/Album/01 tone.wav" and not missing
    assert (await jobs(engine))[content_id] == ("done", None)
    assert await stores_per_content(engine) == {content_id: 1}
    duration = await scalar(engine, "SELECT duration FROM tracks WHERE id = :id", id=track_id)
    assert duration == pytest.approx(0.1, abs=0.01)  # read by mutagen


async def test_moves_renames_and_copies_keep_the_analysis(fast_host, toy_analyzer, music_dir):
    engine = (await fast_host()).app[HOST].engine
    write_wav(music_dir / "a.wav", 300)
    await eventually(lambda: settled(engine, 1))
    [(track_id, content_id, _)] = (await tracks(engine)).values()

    (music_dir / "Album").mkdir()
    os.rename(music_dir / "a.wav", music_dir / "Album" / "renamed.wav")
    await eventually(lambda: present_paths(engine, {"Album/renamed.wav"}), what="the rename")
    shutil.copy(music_dir / "Album" / "renamed.wav", music_dir / "duplicate.wav")
    await eventually(
        lambda: present_paths(engine, {"Album/renamed.wav", "duplicate.wav"}), what="the copy"
    )
    await eventually(lambda: settled(engine, 2))

    catalogue = await tracks(engine)
    assert catalogue["Album/renamed.wav"] == (track_id, content_id, False)
    assert catalogue["duplicate.wav"][1] == content_id  # same content, its own track
    assert catalogue["duplicate.wav"][0] != track_id
    assert await stores_per_content(engine) == {content_id: 1}  # analyzed once


async def test_a_renamed_folder_of_200_tracks_is_not_analyzed_again(
    fast_host, toy_analyzer, music_dir
):
    engine = (await fast_host()).app[HOST].engine
    for number in range(200):
        write_wav(music_dir / "Box Set" / f"{number:03}.wav", 200 + number, seconds=0.02)
    await eventually(lambda: settled(engine, 200), timeout=120, what="200 analyses")
    before = {path.split("/")[1]: ids for path, ids in (await tracks(engine)).items()}

    os.rename(music_dir / "Box Set", music_dir / "Box Set (Remastered)")
    renamed = {f"Box Set (Remastered)/{number:03}.wav" for number in range(200)}
    await eventually(lambda: present_paths(engine, renamed), what="the folder rename")
    await eventually(lambda: settled(engine, 200))
    after = await tracks(engine)
    assert all(path.startswith("Box Set (Remastered)/") for path in after)
    assert {path.split("/")[1]: ids for path, ids in after.items()} == before
    assert set((await stores_per_content(engine)).values()) == {1}


async def test_changed_content_keeps_the_track_and_is_analyzed_again(
    fast_host, toy_analyzer, music_dir
):
    engine = (await fast_host()).app[HOST].engine
    song = write_wav(music_dir / "song.wav", 500)
    await eventually(lambda: settled(engine, 1))
    [(track_id, old_content, _)] = (await tracks(engine)).values()

    write_wav(song, 700, seconds=0.2)  # re-encoded in place
    await eventually(lambda: _content_changed(engine, old_content), what="the new content")
    await eventually(lambda: settled(engine, 1))
    [(same_id, new_content, _)] = (await tracks(engine)).values()
    assert same_id == track_id and new_content != old_content
    assert (await stores_per_content(engine))[new_content] == 1


async def test_a_deleted_file_is_marked_gone_and_its_return_restores_it(
    fast_host, toy_analyzer, music_dir
):
    engine = (await fast_host()).app[HOST].engine
    song = write_wav(music_dir / "Album" / "song.wav", 600)
    await eventually(lambda: settled(engine, 1))
    [(track_id, content_id, _)] = (await tracks(engine)).values()
    kept = song.read_bytes()

    shutil.rmtree(music_dir / "Album")
    await eventually(lambda: _missing(engine, "Album/song.wav"), what="the deletion")
    (music_dir / "Back").mkdir()
    (music_dir / "Back" / "song.wav").write_bytes(kept)
    await eventually(lambda: present_paths(engine, {"Back/song.wav"}), what="the return")
    assert (await tracks(engine))["Back/song.wav"] == (track_id, content_id, False)
    assert await stores_per_content(engine) == {content_id: 1}


async def test_bad_files_fail_with_a_reason_and_the_queue_moves_on(
    fast_host, toy_analyzer, music_dir
):
    engine = (await fast_host()).app[HOST].engine
    (music_dir / "empty.wav").write_bytes(b"")
    (music_dir / "notes.mp3").write_text("these are my notes, not music\n" * 20)
    truncated = write_wav(music_dir / "full.wav", 800, seconds=0.5).read_bytes()[:5000]
    (music_dir / "full.wav").unlink()
    (music_dir / "truncated.wav").write_bytes(truncated)
    write_wav(music_dir / "good.wav", 900)
    await eventually(lambda: settled(engine, 4), what="four outcomes")

    catalogue = await tracks(engine)
    outcome = {path: (await jobs(engine))[ids[1]] for path, ids in catalogue.items()}
    assert outcome["good.wav"] == ("done", None)
    assert outcome["empty.wav"] == ("failed", "empty.wav: the file is empty")
    assert outcome["notes.mp3"][0] == "failed" and "not a readable WAV" in outcome["notes.mp3"][1]
    assert outcome["truncated.wav"] == ("failed", "truncated.wav: truncated (4956 of 16000 bytes)")


async def test_a_file_deleted_before_its_analysis_waits_and_returns(
    fast_host, toy_analyzer, music_dir, tmp_path, monkeypatch
):
    # no job of a missing file is claimed: a short retry delay cannot spend its attempts
    monkeypatch.setenv("SOUNDSPAN_ANALYSIS_RETRY_DELAY_SECONDS", "0.5")
    release = tmp_path / "release"
    engine = (await fast_host(f'[toy]\nhold_until = "{release}"\n')).app[HOST].engine
    song = write_wav(music_dir / "brief.wav", 1000)
    kept = song.read_bytes()
    try:
        await eventually(lambda: _job_state(engine, "running"), what="the analysis to start")
        song.unlink()  # while the analyzer is held, before it reads
        await eventually(lambda: _missing(engine, "brief.wav"), what="the deletion")
    finally:
        release.touch()
    await eventually(lambda: _job_error(engine, "file vanished"), what="the failed read")
    assert "done" not in {state for state, _ in (await jobs(engine)).values()}

    song.write_bytes(kept)
    await eventually(lambda: settled(engine, 1), timeout=60, what="the analysis after return")
    assert set((await jobs(engine)).values()) == {("done", None)}


async def test_file_names_that_are_not_utf8(fast_host, toy_analyzer, music_dir):
    engine = (await fast_host()).app[HOST].engine
    name = os.fsdecode(b"caf\xe9 \xff.wav")  # Latin-1 bytes, as old Windows copies leave them
    write_wav(music_dir / name, 1100)
    await eventually(lambda: settled(engine, 1))
    [(path, (_, content_id, _))] = (await tracks(engine)).items()
    assert path == "caf\ufffd \ufffd.wav"
    raw = await scalar(engine, "SELECT raw_path FROM tracks")
    assert raw == b"caf\xe9 \xff.wav"
    assert (await jobs(engine))[content_id] == ("done", None)


async def test_a_thousand_files_dropped_at_once(fast_host, toy_analyzer, music_dir):
    engine = (await fast_host()).app[HOST].engine
    staging = music_dir.parent / "staging"
    for number in range(1000):
        write_wav(staging / f"{number:04}.wav", 100 + number, seconds=0.01)
    os.rename(staging, music_dir / "drop")  # one folder appears with everything in it
    await eventually(lambda: settled(engine, 1000), timeout=240, what="1000 analyses")
    counts = await stores_per_content(engine)
    assert len(counts) == 1000 and set(counts.values()) == {1}


async def _missing(engine, path):
    return (await tracks(engine)).get(path, (None, None, False))[2] is True


async def _content_changed(engine, old_content):
    return all(content != old_content for _, content, _ in (await tracks(engine)).values())


async def _job_state(engine, state):
    return state in {job_state for job_state, _ in (await jobs(engine)).values()}


async def _job_error(engine, words):
    return any(words in (error or "") for _, error in (await jobs(engine)).values())


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux setpriv")
async def test_a_file_nobody_may_read_is_skipped_with_a_warning(tmp_path, music_dir, database_url):
    """The host runs without root's power to read anything (as a NAS service user would)."""
    write_wav(music_dir / "good.wav", 1200)
    locked = write_wav(music_dir / "locked.wav", 1300)
    locked.chmod(0)
    drop_read_override = "-dac_override,-dac_read_search"
    process, port = start_host_process(
        tmp_path,
        music_dir,
        ["setpriv", f"--inh-caps={drop_read_override}", f"--bounding-set={drop_read_override}"],
        SOUNDSPAN_DATABASE_URL=database_url,
    )
    try:
        wait_healthy(process, port)
        engine = create_async_engine(async_url(database_url))
        try:
            await eventually(lambda: present_paths(engine, {"good.wav"}), what="the good file")
        finally:
            await engine.dispose()
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert "cannot read locked.wav ([Errno 13] Permission denied" in output, output


async def test_scan_command_asks_the_running_host(tmp_path, music_dir, database_url):
    write_wav(music_dir / "waiting.wav", 1400)
    env = {
        "SOUNDSPAN_DATABASE_URL": database_url,
        "SOUNDSPAN_WATCHER__RECONCILE_ON_START": "false",
    }
    process, port = start_host_process(tmp_path, music_dir, **env)
    engine = create_async_engine(async_url(database_url))
    try:
        wait_healthy(process, port)
        scan = subprocess.run(
            [sys.executable, "-m", "soundspan_host", "scan"],
            env={**os.environ, **env, "SOUNDSPAN_PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert scan.returncode == 0, scan.stderr
        assert "scan started" in scan.stdout
        await eventually(lambda: present_paths(engine, {"waiting.wav"}), what="the scan")
    finally:
        await engine.dispose()
        process.terminate()
        process.communicate(timeout=30)

    nobody = subprocess.run(
        [sys.executable, "-m", "soundspan_host", "scan"],
        env={**os.environ, "SOUNDSPAN_PORT": str(port)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert nobody.returncode == 2
    assert "no host answers at" in nobody.stderr
