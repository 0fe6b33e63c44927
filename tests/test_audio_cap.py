"""A file that holds hours of audio costs an analyzer no more than its cap (`max_audio_minutes`):
it is analyzed on its first minutes, and its result says it was capped.

The long file is real MP3: ten seconds PyAV encodes, repeated frame for frame (an MP3 is a
stream of frames) to 18 hours, 65 MB, the length the tags read from it claim, too.
"""

from pathlib import Path

import av
import mutagen
import numpy as np
import pytest

from soundspan_hooks import HOST
from soundspan_plugins.shared.track_audio import TrackAudio
from tests.harness.clap_models import save_tiny_clap
from tests.harness.library import eventually, jobs, rows, settled

RATE = 16000
SECONDS_ENCODED = 10
HOURS = 18


def write_long_mp3(path: Path, hours: float = HOURS) -> Path:
    """`hours` of a 330 Hz tone as 8 kbit/s mono MP3, without a Xing header or ID3 tag, so
    that ten encoded seconds repeated are one valid stream of frames."""
    samples = np.arange(SECONDS_ENCODED * RATE) / RATE
    tone = (0.3 * np.sin(2 * np.pi * 330 * samples) * 2**31).astype(np.int32)
    options = {"write_xing": "0", "id3v2_version": "0"}
    with av.open(str(path), "w", format="mp3", options=options) as container:
        stream = container.add_stream("libmp3lame", rate=RATE, layout="mono")
        stream.bit_rate = 8000
        frame_size = 576  # an MPEG-2 Layer III frame
        for start in range(0, len(tone), frame_size):
            frame = av.AudioFrame.from_ndarray(
                tone[None, start : start + frame_size], format="s32p", layout="mono"
            )
            frame.sample_rate, frame.pts = RATE, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    path.write_bytes(path.read_bytes() * round(hours * 3600 / SECONDS_ENCODED))
    return path


def test_an_analyzer_reads_no_more_than_its_cap_of_a_long_file(tmp_path):
    long_mix = write_long_mp3(tmp_path / "long.mp3")
    assert mutagen.File(long_mix).info.length == pytest.approx(HOURS * 3600, rel=0.01)

    audio = TrackAudio(long_mix, RATE, max_seconds=30)
    samples = np.concatenate(list(audio))
    assert (audio.decoder, audio.capped, audio.seconds) == ("FFmpeg", True, 30.0)
    assert len(samples) == 30 * RATE and np.abs(samples).max() > 0.1

    whole = TrackAudio(write_long_mp3(tmp_path / "short.mp3", hours=20 / 3600), RATE, 30)
    assert len(np.concatenate(list(whole))) < 30 * RATE and not whole.capped


async def test_both_analyzers_cap_a_long_file_and_say_so(
    fast_host, monkeypatch, music_dir, tmp_path
):
    monkeypatch.setenv("SOUNDSPAN_MUSICNN__ENABLED", "true")
    monkeypatch.setenv("SOUNDSPAN_CLAP__ENABLED", "true")
    monkeypatch.setenv("SOUNDSPAN_CLAP__MODEL", str(save_tiny_clap(tmp_path / "tiny-clap", 512)))
    write_long_mp3(music_dir / "long.mp3")
    client = await fast_host(
        '[musicnn]\nworkers = 1\nprecision = "fp32"\nmax_audio_minutes = 0.5\n'
        "[clap]\nworkers = 1\nmax_audio_minutes = 0.5\n"
    )
    engine = client.app[HOST].engine
    await eventually(lambda: settled(engine, 1), timeout=240, what="both analyses")

    [track] = await rows(engine, "SELECT id, content_id, duration FROM tracks")
    assert track.duration == pytest.approx(HOURS * 3600, rel=0.01)  # what the file claims
    for analyzer in ("musicnn", "clap"):
        assert (await jobs(engine, analyzer))[track.content_id] == ("done", None), analyzer
    shown = await (await client.get(f"/api/tracks/{track.id}")).json()
    musicnn, clap = shown["results"]["musicnn"], shown["results"]["clap"]
    for result in (musicnn, clap):
        assert (result["decoder"], result["analyzed_seconds"], result["capped"]) == (
            "FFmpeg",
            30.0,
            True,
        ), result
    assert (musicnn["patches"], clap["windows"]) == (10, 3)  # 30 s: ten 3-s patches, 10-s windows
