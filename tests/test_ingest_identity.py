"""A file's identity is its audio payload: retags (beets, Picard) never re-analyze it, audio
edits do, and a library recorded under the old byte fingerprints is not analyzed again."""

import hashlib
import os
import shutil
from pathlib import Path

import av
import mutagen
import numpy as np
import pytest
from mutagen.apev2 import APEv2
from mutagen.flac import FLAC, Picture
from mutagen.id3 import APIC, ID3, TIT2
from mutagen.wave import WAVE
from sqlalchemy import text

from soundspan_hooks import HOST
from soundspan_plugins.watcher.files import read_facts
from soundspan_plugins.watcher.identity import bytes_fingerprint
from tests.harness.library import eventually, rows, scalar, settled, tracks, write_wav

FIXTURES = Path(__file__).parent / "fixtures" / "musicnn"
COVER = bytes(range(256)) * 8192  # 2 MiB of "cover art"


def encode_m4a(path: Path, seconds: float = 20.0, rate: int = 44100) -> Path:
    """An AAC track in an MP4 container, encoded by PyAV."""
    with av.open(str(path), "w", format="mp4") as output:
        stream = output.add_stream("aac", rate=rate, layout="mono")
        samples = (0.3 * np.sin(2 * np.pi * 330 * np.arange(int(seconds * rate)) / rate)).astype(
            np.float32
        )
        size = 1024  # AAC frames
        for start in range(0, len(samples), size):
            frame = av.AudioFrame.from_ndarray(
                samples[None, start : start + size], format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
    return path


def retag(path: Path, title: str) -> None:
    """What a tagger does: new text tags and a big cover, in every tag format the file has."""
    tagged = mutagen.File(path, easy=True)
    if tagged.tags is None:
        tagged.add_tags()
    tagged["title"] = title
    tagged["artist"] = "Somebody Else"
    tagged.save()
    if path.suffix == ".mp3":
        id3 = ID3(path)
        id3.add(APIC(encoding=3, mime="image/jpeg", type=3, desc="cover", data=COVER))
        id3.save(v1=2)  # an ID3v1 tag at the end, too
        ape = APEv2()
        ape["Title"] = title
        ape.save(path)
    if path.suffix == ".flac":
        flac = FLAC(path)
        picture = Picture()
        picture.type, picture.mime, picture.data = 3, "image/jpeg", COVER
        flac.add_picture(picture)
        flac.save()


def identities(path: Path) -> tuple[str, str | None]:
    facts = read_facts(path)
    return facts.fingerprint, facts.bytes_fingerprint


@pytest.mark.parametrize(
    "name", ["anttis_1918.mp3", "anttis_funkyrobot_16k.flac", "anttis_funkyrobot.opus", "song.m4a"]
)
def test_a_retag_keeps_the_payload_identity(tmp_path, name):
    path = tmp_path / name
    if name == "song.m4a":
        encode_m4a(path)
    else:
        shutil.copy(FIXTURES / name, path)
    payload, old_bytes = identities(path)

    retag(path, "A much longer title " * 20)
    assert mutagen.File(path, easy=True)["title"] == ["A much longer title " * 20]
    retagged_payload, retagged_bytes = identities(path)
    assert payload.startswith("pl1:")
    assert retagged_payload == payload
    assert retagged_bytes != old_bytes  # the byte fingerprint would have re-analyzed it


def test_an_audio_edit_changes_the_identity(tmp_path):
    song = tmp_path / "song.mp3"
    shutil.copy(FIXTURES / "anttis_1918.mp3", song)
    payload, _ = identities(song)
    with song.open("r+b") as audio:  # the last second cut off
        audio.truncate(song.stat().st_size - 16000)
    assert identities(song)[0] != payload

    tone = write_wav(tmp_path / "tone.wav", 440, seconds=2)
    before, _ = identities(tone)
    frames = bytearray(tone.read_bytes())
    frames[len(frames) // 2] ^= 0x40  # one sample in the middle
    tone.write_bytes(frames)
    assert identities(tone)[0] != before


def test_a_file_that_is_not_audio_is_known_by_its_bytes(tmp_path):
    notes = tmp_path / "notes.mp3"
    notes.write_text("these are my notes, not music\n" * 20)
    payload, old_bytes = identities(notes)
    with notes.open("rb") as file:
        assert payload == old_bytes == bytes_fingerprint(file, notes.stat().st_size)
    assert payload.startswith("b2:")


def retag_wav(path: Path, title: str) -> None:
    wave = WAVE(path)
    if wave.tags is None:
        wave.add_tags()
    wave.tags.add(TIT2(encoding=3, text=title))
    wave.save()


async def job_rows(engine) -> list:
    return await rows(
        engine, "SELECT content_id, analyzer, created_at FROM analysis_jobs ORDER BY 1, 2"
    )


async def test_a_retag_of_1000_analyzed_files_queues_nothing(fast_host, toy_analyzer, music_dir):
    for number in range(1000):
        write_wav(music_dir / "Box" / f"{number:04}.wav", 100 + number, seconds=0.01)
    engine = (await fast_host()).app[HOST].engine
    await eventually(lambda: settled(engine, 1000), timeout=240, what="1000 analyses")
    before_tracks, before_jobs = await tracks(engine), await job_rows(engine)

    for number in range(1000):
        retag_wav(music_dir / "Box" / f"{number:04}.wav", f"Track {number} (2024 remaster)")
    sizes = {f"Box/{path.name}": path.stat().st_size for path in (music_dir / "Box").iterdir()}
    await eventually(lambda: _sizes_recorded(engine, sizes), timeout=240, what="the retags")

    assert await job_rows(engine) == before_jobs  # no job queued, none re-created
    assert await tracks(engine) == before_tracks  # each track keeps its id and content


async def test_an_upgrade_from_byte_fingerprints_queues_nothing(fast_host, toy_analyzer, music_dir):
    """A library recorded as the host did before payload identities (contents keyed by the byte
    fingerprint, no payload_id, analyses done) is read once after the upgrade and then
    survives a retag: nothing is analyzed again."""
    songs = [write_wav(music_dir / f"{n:02}.wav", 300 + 10 * n, seconds=0.3) for n in range(20)]
    client = await fast_host()
    engine = client.app[HOST].engine
    await eventually(lambda: settled(engine, 20), what="the first analyses")
    async with engine.begin() as connection:
        await _rewrite_as_before_payload_identities(connection, music_dir, songs)
    before_tracks, before_jobs = await tracks(engine), await job_rows(engine)
    assert all(content.startswith("b2:") for _, content, _ in before_tracks.values())

    scanned = await client.post("/api/library/scan")
    assert scanned.status == 202
    await eventually(lambda: _payloads_recorded(engine, 20), what="the payload identities")
    for song in songs:
        retag_wav(song, "retagged")
    sizes = {song.name: song.stat().st_size for song in songs}
    await eventually(lambda: _sizes_recorded(engine, sizes), what="the retags")

    assert await job_rows(engine) == before_jobs
    assert await tracks(engine) == before_tracks


async def _rewrite_as_before_payload_identities(connection, music_dir, songs) -> None:
    """Key every content and its rows by the byte fingerprint, as the old ingest did."""
    for song in songs:
        relative = song.name
        with song.open("rb") as file:
            old_id = bytes_fingerprint(file, song.stat().st_size)
        current = (
            await connection.execute(
                text("SELECT content_id FROM tracks WHERE path = :path"), {"path": relative}
            )
        ).scalar_one()
        await connection.execute(
            text("INSERT INTO contents (id, size) SELECT :old, size FROM contents WHERE id = :id"),
            {"old": old_id, "id": current},
        )
        for table in ("tracks", "analysis_jobs", "toy_stores"):
            await connection.execute(
                text(f"UPDATE {table} SET content_id = :old WHERE content_id = :id"),
                {"old": old_id, "id": current},
            )
        await connection.execute(text("DELETE FROM contents WHERE id = :id"), {"id": current})


async def _sizes_recorded(engine, sizes: dict[str, int]) -> bool:
    recorded = {row.path: row.size for row in await rows(engine, "SELECT path, size FROM tracks")}
    return all(recorded.get(path) == size for path, size in sizes.items())


async def _payloads_recorded(engine, count: int) -> bool:
    filled = await scalar(engine, "SELECT count(*) FROM contents WHERE payload_id IS NOT NULL")
    return filled == count


def test_bytes_fingerprint_is_the_old_scheme(tmp_path):
    """The fallback is exactly the identity every recorded content has today (size, then the
    whole file up to 256 KiB, else four 64 KiB blocks)."""
    small = write_wav(tmp_path / "small.wav", 440, seconds=1)
    large = tmp_path / "large.mp3"
    shutil.copy(FIXTURES / "anttis_1918.mp3", large)
    for path in (small, large):
        size = path.stat().st_size
        data = path.read_bytes()
        digest = hashlib.blake2b(str(size).encode(), digest_size=16)
        if size <= 4 * 65536:
            digest.update(data)
        else:
            step = (size - 65536) // 3
            for index in range(4):
                digest.update(data[index * step : index * step + 65536])
        with path.open("rb") as file:
            assert bytes_fingerprint(file, size) == "b2:" + digest.hexdigest()
    assert os.path.getsize(large) > 4 * 65536
