"""Hostile entries in the music dir (links to devices, FIFOs, sockets, links out of the dir,
paths the database cannot index, hidden folders) never take the host down or stop the
reconcile: a real host process, a real PostgreSQL, real files."""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import urllib.request

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from soundspan_host.database import async_url
from soundspan_plugins.watcher.files import AudioFiles
from tests.harness.library import eventually, present_paths, write_wav
from tests.harness.processes import start_host_process, wait_healthy

STOP_SECONDS = 30  # a clean stop takes a second or two; a blocked one never ends
BLOCKED_SECONDS = 60  # a refusal takes microseconds; a read that waits for a writer never ends


def scan_state(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/library/scan", timeout=10) as answer:
        return json.load(answer)


def long_path(music_dir) -> str:
    """A relative path of ~3,000 bytes in folders of random names (which don't compress), past
    PostgreSQL's 2,704-byte btree limit and within Linux's 4,096."""
    folders = [secrets.token_urlsafe(168) for _ in range(13)]  # 224 bytes each
    relative = "/".join(["deep", *folders, "song.wav"])
    assert len(relative) > 2704 and len(str(music_dir / relative)) < 4000
    return relative


async def test_hostile_entries_leave_the_host_up_and_the_good_files_indexed(
    tmp_path, music_dir, database_url
):
    write_wav(music_dir / "good.wav", 440)
    (music_dir / "zero.mp3").symlink_to("/dev/zero")
    os.mkfifo(music_dir / "fifo.mp3")
    outside = write_wav(tmp_path / "elsewhere" / "outside.wav", 550)
    (music_dir / "outside.wav").symlink_to(outside)
    (music_dir / "dangling.mp3").symlink_to(tmp_path / "nothing-here.mp3")
    (music_dir / "inside.wav").symlink_to(music_dir / "good.wav")  # inside: followed
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(music_dir / "socket.mp3"))
    write_wav(music_dir / ".Trash-1000" / "deleted.wav", 660)
    deep = long_path(music_dir)
    write_wav(music_dir / deep, 770)

    process, port = start_host_process(tmp_path, music_dir, SOUNDSPAN_DATABASE_URL=database_url)
    engine = create_async_engine(async_url(database_url))
    try:
        wait_healthy(process, port)
        expected = {"good.wav", "inside.wav"}
        await eventually(
            lambda: present_paths(engine, expected), what=f"the good files: {process.output()}"
        )
        state = await eventually(
            lambda: _finished_scan(port), timeout=60, what="the start-up reconcile to end"
        )
        assert state["last"]["skipped"] == 5  # zero, fifo, socket, outside, dangling
        assert state["last"]["unrecordable"] == 1
        [problem] = state["problems"]
        assert problem["path"] == deep and "shorten its folder or file names" in problem["reason"]

        # the same entries arriving while the host watches
        (music_dir / "later").mkdir()
        (music_dir / "later" / "zero.mp3").symlink_to("/dev/zero")
        os.mkfifo(music_dir / "later" / "fifo.mp3")
        write_wav(music_dir / ".Trash-1000" / "also-deleted.wav", 880)
        write_wav(music_dir / "later" / "fine.wav", 990)
        expected.add("later/fine.wav")
        await eventually(lambda: present_paths(engine, expected), what="the file after them")
    finally:
        await engine.dispose()
        listener.close()
        process.terminate()
        output, _ = process.communicate(timeout=STOP_SECONDS)
    assert process.returncode == 0, output
    assert "MemoryError" not in output and "Traceback" not in output, output
    assert "a symlink out of the music dir" in output
    assert output.count("reconcile of") == 1, output  # the bad path did not loop the rescan


async def _finished_scan(port: int) -> dict | None:
    state = scan_state(port)
    return state if state["last"] is not None and not state["scanning"] else None


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux setpriv")
def test_a_folder_that_cannot_be_read_keeps_its_tracks(music_dir):
    """Run as a user without root's power to read anything (as a NAS service user would): a
    folder the walk cannot enter is out of sight, not gone."""
    write_wav(music_dir / "Album" / "01.wav", 440)
    write_wav(music_dir / "Open" / "02.wav", 550)
    (music_dir / "Album").chmod(0)
    drop = "-dac_override,-dac_read_search"
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from soundspan_plugins.watcher.files import AudioFiles\n"
        "listing = AudioFiles(Path(sys.argv[1]), ['wav'], []).walk()\n"
        "print(json.dumps([sorted(listing.files), listing.unreadable,"
        " listing.out_of_sight('Album/01.wav')]))\n"
    )
    try:
        walked = subprocess.run(
            ["setpriv", f"--inh-caps={drop}", f"--bounding-set={drop}"]
            + [sys.executable, "-c", script, str(music_dir)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        (music_dir / "Album").chmod(0o755)
    assert walked.returncode == 0, walked.stderr
    files, unreadable, album_out_of_sight = json.loads(walked.stdout)
    assert files == ["Open/02.wav"]
    assert unreadable == ["Album"] and album_out_of_sight
    assert "cannot read folder" in walked.stderr


def test_the_watcher_and_the_walk_agree_on_hidden_folders(music_dir):
    files = AudioFiles(music_dir, ["wav"], [])
    write_wav(music_dir / ".Trash-1000" / "old.wav", 440)
    write_wav(music_dir / "Album" / ".hidden" / "x.wav", 440)
    write_wav(music_dir / "Album" / "kept.wav", 440)
    assert files.relative(music_dir / ".Trash-1000" / "old.wav") is None
    assert files.relative(music_dir / "Album" / ".hidden" / "x.wav") is None
    assert list(files.walk().files) == ["Album/kept.wav"]


def test_reading_a_fifo_is_refused_without_waiting_for_a_writer(music_dir):
    """No one ever writes to the FIFO: a read that waited for a writer would wait forever, so
    it runs in a thread of its own, which the test frees (by opening the writing end) to fail
    with a message instead of hanging."""
    fifo = music_dir / "pipe.wav"
    os.mkfifo(fifo)
    files = AudioFiles(music_dir, ["wav"], [])
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            files.read("pipe.wav")
            outcome.append(None)
        except BaseException as error:  # handed to the test's thread
            outcome.append(error)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(BLOCKED_SECONDS)
    if reader.is_alive():
        # a reader blocked in open() counts as one: a non-blocking writer's open succeeds
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(BLOCKED_SECONDS)
        pytest.fail("reading a FIFO waited for a writer (it was freed by the test's own)")
    [error] = outcome
    assert isinstance(error, OSError) and "not a regular file" in str(error), error
