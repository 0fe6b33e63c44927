"""Richer tags at ingest: real MP3, FLAC, Ogg Vorbis and M4A files (PyAV encodes, mutagen tags),
read by the watcher into the tracks table; an older library gets them once, without analysis."""

from pathlib import Path

import pytest

from soundspan_hooks import HOST
from soundspan_plugins.watcher.files import read_facts
from tests.harness.library import eventually, rows, scalar, settled, write_wav
from tests.harness.tagged_audio import write_tagged

RECORDING_ID = "1b7f7a6c-1d2e-4d6b-9a0a-7f8e9d0c1b2a"
PICARD_TAGS = {
    "title": "So What",
    "artist": "Miles Davis",
    "album": "Kind of Blue",
    "albumartist": "Miles Davis Sextet",
    "tracknumber": "1/5",
    "discnumber": "1/1",
    "date": "1959-08-17",
    "genre": "Jazz",
    "isrc": "USSM15900113",
    "musicbrainz_trackid": RECORDING_ID,
}
STORED_TAGS = {
    "title": "So What",
    "artist": "Miles Davis",
    "album": "Kind of Blue",
    "album_artist": "Miles Davis Sextet",
    "track_number": 1,
    "disc_number": 1,
    "year": 1959,
    "genre": "Jazz",
    "isrc": "USSM15900113",
    "musicbrainz_recording_id": RECORDING_ID,
}
FORMATS = [".mp3", ".flac", ".ogg", ".m4a"]
JOB_STATES = (
    "SELECT t.path, j.state FROM tracks t JOIN analysis_jobs j USING (content_id)"
    " WHERE j.analyzer = 'toy'"
)


@pytest.mark.parametrize("suffix", FORMATS)
def test_every_format_yields_the_same_tags(tmp_path: Path, suffix: str) -> None:
    facts = read_facts(write_tagged(tmp_path / f"so what{suffix}", PICARD_TAGS, seconds=2.0))
    assert {name: getattr(facts, name) for name in STORED_TAGS} == STORED_TAGS
    assert facts.duration == pytest.approx(2.0, abs=0.1)


def test_numbers_come_from_how_taggers_write_them(tmp_path: Path) -> None:
    tags = {"tracknumber": "07", "discnumber": "2", "date": "2004"}
    facts = read_facts(write_tagged(tmp_path / "a.flac", tags))
    assert (facts.track_number, facts.disc_number, facts.year) == (7, 2, 2004)


def test_missing_or_odd_tags_stay_empty(tmp_path: Path) -> None:
    facts = read_facts(write_tagged(tmp_path / "a.mp3", {"tracknumber": "side A", "date": ""}))
    assert facts.track_number is None and facts.year is None and facts.isrc is None
    assert facts.musicbrainz_recording_id is None and facts.title is None


@pytest.fixture
async def host(fast_host, toy_analyzer):
    client = await fast_host()
    return client, client.app[HOST].engine


async def stored_tags(engine, path: str) -> dict | None:
    found = await rows(
        engine, f"SELECT {', '.join(STORED_TAGS)} FROM tracks WHERE path = :path", path=path
    )
    return found[0]._asdict() if found else None


@pytest.mark.parametrize("suffix", FORMATS)
async def test_a_dropped_file_is_stored_with_its_tags(host, music_dir: Path, suffix: str) -> None:
    _, engine = host
    write_tagged(music_dir / "Miles" / f"01 So What{suffix}", PICARD_TAGS)
    stored = await eventually(
        lambda: stored_tags(engine, f"Miles/01 So What{suffix}"), what="the track's row"
    )
    assert stored == STORED_TAGS


async def test_a_library_from_before_the_tags_gets_them_once_without_reanalysis(
    host, music_dir: Path
) -> None:
    """Rows written before revision 0002 have no tag set: the next reconcile reads their tags,
    and the content, unchanged, keeps its analysis jobs as they were: the one done (a WAV, which
    the toy analyzer reads) as much as the one failed (a FLAC, which it cannot)."""
    client, engine = host
    write_tagged(music_dir / "a.flac", PICARD_TAGS)
    write_wav(music_dir / "b.wav", 440)
    await eventually(lambda: settled(engine, 2), what="the toy analyzer's two outcomes")
    jobs_before = await rows(engine, "SELECT * FROM analysis_jobs ORDER BY content_id")
    outcomes = {(path, state) for path, state in await rows(engine, JOB_STATES)}
    assert outcomes == {("a.flac", "failed"), ("b.wav", "done")}
    async with engine.begin() as connection:  # as revision 0002 leaves an older row
        await connection.exec_driver_sql(
            "UPDATE tracks SET tags_version = NULL, album_artist = NULL, isrc = NULL,"
            " musicbrainz_recording_id = NULL, year = NULL"
        )

    assert (await client.post("/api/library/scan")).status == 202

    async def tags_read_again():
        return await scalar(engine, "SELECT bool_and(tags_version IS NOT NULL) FROM tracks")

    await eventually(tags_read_again, what="the reconcile to read the tags again")
    assert await stored_tags(engine, "a.flac") == STORED_TAGS
    assert await rows(engine, "SELECT * FROM analysis_jobs ORDER BY content_id") == jobs_before
