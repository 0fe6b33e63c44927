"""Every file a player plays gets analyzed: where FFmpeg refuses a file, libsndfile reads it.

The files FFmpeg refuses here have the trait of Debian's `hyperrogue-music` tracks
(hr-savino-caribbean.ogg, -ivory, -ocean): an Ogg Vorbis stream whose three header packets
(identification, comment, setup) come a second time, in the same logical stream, before the
first audio packet. FFmpeg's Ogg demuxer reads header packets until the first audio packet and
rejects a header kind it has already seen ("Header processing failed", Invalid data); libvorbis
skips them. The tests write that trait into a Vorbis file PyAV encodes.
"""

import dataclasses
import shutil
from pathlib import Path

import av
import mutagen
import numpy as np
import pytest
from mutagen.ogg import OggPage
from sqlalchemy import text

from soundspan_hooks import HOST, LibraryEvent, LibraryEventKind
from soundspan_host.library_writes import apply_event
from soundspan_plugins.shared.audio import UnreadableAudio, decode_mono
from soundspan_plugins.shared.track_audio import TrackAudio
from soundspan_plugins.watcher.files import read_facts
from tests.harness.clap_models import save_tiny_clap
from tests.harness.library import eventually, jobs, rows, settled, tracks
from tests.harness.tagged_audio import write_tagged

TAGS = {"title": "Caribbean", "artist": "Will Savino", "album": "HyperRogue"}
NOT_AUDIO = b"Shopping list: milk, eggs, a new amplifier.\n" * 20


def write_vorbis_headers_twice(path: Path, after_audio_pages: int = 0) -> Path:
    """Write the file's Vorbis header packets again, in the same logical stream, on pages of
    their own after the header pages (and after `after_audio_pages` audio pages)."""
    with path.open("rb") as file:
        pages = []
        while True:
            try:
                pages.append(OggPage(file))
            except EOFError:
                break
    header_pages = 1
    while len(OggPage.to_packets(pages[:header_pages])) < 3:
        header_pages += 1
    again = OggPage.from_packets(OggPage.to_packets(pages[:header_pages], strict=True))
    for page in again:
        page.serial, page.position = pages[0].serial, 0
    at = header_pages + after_audio_pages
    pages = pages[:at] + again + pages[at:]
    for sequence, page in enumerate(pages):
        page.sequence = sequence
    path.write_bytes(b"".join(page.write() for page in pages))
    return path


def ffmpeg_refuses(path: Path) -> bool:
    try:
        av.open(str(path)).close()
    except av.error.InvalidDataError:
        return True
    return False


def test_libsndfile_reads_what_ffmpeg_refuses_as_ffmpeg_reads_the_unchanged_file(tmp_path):
    original = write_tagged(tmp_path / "original.ogg", TAGS, seconds=6.0, frequency=330.0)
    refused = write_vorbis_headers_twice(shutil.copy(original, tmp_path / "refused.ogg"))
    later = write_vorbis_headers_twice(shutil.copy(original, tmp_path / "later.ogg"), 1)
    assert ffmpeg_refuses(refused)
    assert not ffmpeg_refuses(later)  # the trait is headers again before any audio

    audio = TrackAudio(refused, 16000)
    samples = np.concatenate(list(audio))
    expected = np.concatenate(list(decode_mono(original, 16000)))
    assert (audio.decoder, audio.capped) == ("libsndfile", False)
    assert len(samples) == len(expected) and audio.seconds == pytest.approx(6.0, abs=0.05)
    assert np.abs(samples - expected).max() < 1e-5

    facts = read_facts(refused)  # identity and tags keep working
    assert facts.fingerprint.startswith("b2:") and facts.fingerprint == facts.bytes_fingerprint
    assert (facts.title, facts.artist, facts.album) == ("Caribbean", "Will Savino", "HyperRogue")
    assert facts.duration == pytest.approx(6.0, abs=0.05)


def test_a_file_no_decoder_can_read_fails_naming_each_decoder(tmp_path):
    notes = tmp_path / "notes.ogg"
    notes.write_bytes(NOT_AUDIO)
    with pytest.raises(UnreadableAudio) as caught:
        list(TrackAudio(notes, 16000))
    reason = caught.value.reason
    assert "FFmpeg: it is not an audio file FFmpeg can read" in reason, reason
    assert "libsndfile: it is not an audio file libsndfile can read" in reason, reason


@pytest.fixture(scope="module")
def tiny_clap_dir(tmp_path_factory):
    return save_tiny_clap(tmp_path_factory.mktemp("clap") / "tiny-clap", projection_dim=512)


async def test_both_analyzers_analyze_a_file_ffmpeg_refuses_and_say_which_decoder_read_it(
    fast_host, monkeypatch, tiny_clap_dir, music_dir
):
    monkeypatch.setenv("SOUNDSPAN_MUSICNN__ENABLED", "true")
    monkeypatch.setenv("SOUNDSPAN_CLAP__ENABLED", "true")
    monkeypatch.setenv("SOUNDSPAN_CLAP__MODEL", str(tiny_clap_dir))
    song = write_tagged(music_dir / "caribbean.ogg", TAGS, seconds=8.0, frequency=330.0)
    write_vorbis_headers_twice(song)
    assert ffmpeg_refuses(song)
    (music_dir / "notes.ogg").write_bytes(NOT_AUDIO)
    client = await fast_host('[musicnn]\nworkers = 1\nprecision = "fp32"\n[clap]\nworkers = 1\n')
    engine = client.app[HOST].engine
    await eventually(lambda: settled(engine, 2), timeout=240, what="both analyses")

    content = {path: content for path, (_, content, _) in (await tracks(engine)).items()}
    for analyzer in ("musicnn", "clap"):
        outcome = await jobs(engine, analyzer)
        assert outcome[content["caribbean.ogg"]] == ("done", None), analyzer
        state, reason = outcome[content["notes.ogg"]]
        assert state == "failed" and "FFmpeg: " in reason and "libsndfile: " in reason, reason

    listing = await (await client.get("/api/tracks", params={"q": "Caribbean"})).json()
    [track] = listing["tracks"]
    assert (track["title"], track["artist"]) == ("Caribbean", "Will Savino")
    shown = await (await client.get(f"/api/tracks/{track['id']}")).json()
    for analyzer in ("musicnn", "clap"):
        result = shown["results"][analyzer]
        assert (result["decoder"], result["capped"]) == ("libsndfile", False), result
        assert result["analyzed_seconds"] == pytest.approx(8.0, abs=0.05)
    assert shown["results"]["musicnn"]["patches"] == 2  # 8 s: two 3-s patches


async def test_a_later_ffmpeg_that_reads_the_file_keeps_its_content_and_results(
    fast_host, toy_analyzer, music_dir, tmp_path
):
    """Known by its bytes while FFmpeg refuses it; a later FFmpeg finds its audio payload (the
    unchanged file's, here) and the content learns that identity instead of becoming new."""
    original = write_tagged(tmp_path / "original.ogg", TAGS, seconds=2.0)
    song = write_vorbis_headers_twice(shutil.copy(original, music_dir / "caribbean.ogg"))
    client = await fast_host()
    engine = client.app[HOST].engine
    await eventually(lambda: settled(engine, 1), what="the first analysis")
    before_tracks = await tracks(engine)
    before_jobs = await rows(engine, "SELECT * FROM analysis_jobs ORDER BY content_id")
    [(_, content_id, _)] = before_tracks.values()
    assert content_id.startswith("b2:")

    payload = read_facts(original).fingerprint
    assert payload.startswith("pl1:")
    facts = dataclasses.replace(read_facts(song), fingerprint=payload)
    versions = {job.analyzer: job.version for job in before_jobs}
    async with engine.begin() as connection:
        await apply_event(
            connection, LibraryEvent(LibraryEventKind.CHANGED, song.name, facts=facts), versions
        )

    assert await tracks(engine) == before_tracks
    assert await rows(engine, "SELECT * FROM analysis_jobs ORDER BY content_id") == before_jobs
    async with engine.connect() as connection:
        learned = await connection.execute(
            text("SELECT payload_id FROM contents WHERE id = :id"), {"id": content_id}
        )
        assert learned.scalar_one() == payload
    assert mutagen.File(song, easy=True)["title"] == ["Caribbean"]
