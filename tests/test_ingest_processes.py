"""Files are read in worker processes, off the host's event loop: the host's own interpreter
opens none of them, and a read process that dies (killed, or a decoder crash) loses no file.
Real WAV files, real worker processes."""

import json
import logging
import os

import psutil
import pytest

from soundspan_hooks import HOST, TrackFacts
from soundspan_plugins.watcher import files as watcher_files
from soundspan_plugins.watcher.files import AudioFiles
from soundspan_plugins.watcher.reading import FileReads, Unread, read_files
from tests.harness.library import eventually, present_paths, write_wav
from tests.harness.read_tasks import DIES_ALWAYS, DIES_ONCE, ReaderNoWorkerLoads, read_or_die


@pytest.mark.parametrize(("processes", "in_host"), [("auto", False), (0, True)])
async def test_files_are_read_outside_the_hosts_process_unless_set_to_zero(
    processes, in_host, fast_host, toy_analyzer, music_dir, monkeypatch
):
    opened_here: list[str] = []
    read_facts = watcher_files.read_facts

    def recorded(path):
        opened_here.append(str(path))
        return read_facts(path)

    monkeypatch.setattr(watcher_files, "read_facts", recorded)  # in this process only
    settings = f"[watcher]\nread_processes = {json.dumps(processes)}\n"
    engine = (await fast_host(settings)).app[HOST].engine
    write_wav(music_dir / "Album" / "01.wav", 440)
    write_wav(music_dir / "Album" / "02.wav", 550)

    await eventually(lambda: present_paths(engine, {"Album/01.wav", "Album/02.wav"}))
    assert bool(opened_here) is in_host, opened_here


def read_processes() -> list[psutil.Process]:
    """This process's spawned workers (the toy analyzer starts none)."""
    return [
        child
        for child in psutil.Process().children(recursive=True)
        if "spawn_main" in " ".join(child.cmdline())
    ]


async def test_a_hosts_read_process_killed_stops_nothing(fast_host, toy_analyzer, music_dir):
    engine = (await fast_host()).app[HOST].engine
    write_wav(music_dir / "first.wav", 440)
    await eventually(lambda: present_paths(engine, {"first.wav"}))
    killed = read_processes()
    assert killed, "no read process"
    for reader in killed:
        reader.kill()  # not reaped here: its exit is the pool's to see
        await eventually(lambda reader=reader: ended(reader), what="the reader's exit")

    write_wav(music_dir / "second.wav", 550)
    await eventually(lambda: present_paths(engine, {"first.wav", "second.wav"}))
    assert {reader.pid for reader in read_processes()}.isdisjoint(r.pid for r in killed)


async def ended(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def tones(music_dir, count: int, *special: str) -> list[str]:
    names = [f"{n:03}.wav" for n in range(count)]
    names[count // 2 : count // 2] = special
    for n, name in enumerate(names):
        write_wav(music_dir / name, 200 + 10 * n, seconds=0.02)
    return names


async def read_in(files: AudioFiles, names: list[str], processes: int, read=read_or_die):
    reads = FileReads(files, processes, read)
    reads.start()
    try:
        return await reads.read(names), await reads.read(names[:2])
    finally:
        await reads.close()


async def test_a_read_process_killed_mid_chunk_loses_no_file(music_dir, caplog):
    names = tones(music_dir, 119, f"{DIES_ONCE}.wav")  # 120: chunks of 50, 50 and 20
    with caplog.at_level(logging.WARNING):
        read, after = await read_in(AudioFiles(music_dir, ["wav"], []), names, 1)

    assert all(isinstance(facts, TrackFacts) for facts in read), read
    assert len({facts.fingerprint for facts in read}) == 120
    assert [facts.fingerprint for facts in after] == [facts.fingerprint for facts in read[:2]]
    [lost] = [record.message for record in caplog.records]
    assert "killed by SIGKILL" in lost and "reading its 50 files again" in lost, lost
    assert (music_dir / ".died" / f"{DIES_ONCE}.wav").exists()  # it did die


async def test_a_file_that_kills_its_reader_every_time_is_skipped_alone(music_dir, caplog):
    names = tones(music_dir, 9, f"{DIES_ALWAYS}.wav", "empty.wav")
    (music_dir / "empty.wav").write_bytes(b"")  # not audio: still facts, as before
    names.append("gone.wav")  # never there
    with caplog.at_level(logging.WARNING):
        read, after = await read_in(AudioFiles(music_dir, ["wav"], []), names, 2)

    outcomes = dict(zip(names, read, strict=True))
    crashed = outcomes.pop(f"{DIES_ALWAYS}.wav")
    assert isinstance(crashed, Unread) and crashed.outcome == "unreadable", crashed
    assert crashed.reason.startswith("its reading process died twice"), crashed
    assert outcomes.pop("gone.wav") == Unread("vanished", "gone before it could be read")
    assert all(isinstance(facts, TrackFacts) for facts in outcomes.values()), outcomes
    assert all(isinstance(facts, TrackFacts) for facts in after)  # the pool reads on
    assert "reading its 6 files again" in caplog.text and "in halves" in caplog.text


async def test_hostile_files_give_their_outcome_from_a_read_process(music_dir, tmp_path):
    write_wav(music_dir / "good.wav", 440)
    os.mkfifo(music_dir / "fifo.wav")
    (music_dir / "outside.wav").symlink_to(write_wav(tmp_path / "elsewhere.wav", 550))
    (music_dir / "folder.wav").mkdir()  # a folder named like music
    names = ["good.wav", "fifo.wav", "outside.wav", "folder.wav", "gone.wav"]

    read, _ = await read_in(AudioFiles(music_dir, ["wav"], []), names, 1, read_files)

    good, fifo, outside, folder, gone = read
    assert isinstance(good, TrackFacts)
    assert fifo.outcome == "skipped" and "not a regular file" in fifo.reason
    assert outside.outcome == "skipped" and "a symlink out of the music dir" in outside.reason
    assert folder.outcome == "skipped" and "not a regular file" in folder.reason
    assert gone.outcome == "vanished"


async def test_files_are_read_in_threads_when_read_processes_cannot_start(music_dir, caplog):
    names = tones(music_dir, 3)
    files = ReaderNoWorkerLoads(music_dir, ["wav"], [])
    with caplog.at_level(logging.ERROR):
        read, _ = await read_in(files, names, 1, read_files)

    assert all(isinstance(facts, TrackFacts) for facts in read), read
    assert "keep stopping before they take work" in caplog.text
    assert "reading 3 files in the host's threads instead" in caplog.text
