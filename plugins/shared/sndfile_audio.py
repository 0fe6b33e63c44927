"""The second decoder: libsndfile (the `soundfile` wheel, which bundles libvorbis, libopus,
FLAC and mpg123), for files FFmpeg refuses that every libvorbis-based player plays.

Its output is the FFmpeg path's: mono float32 (channel mean) at the analyzer's rate, resampled
by the same soxr stream, read block by block so a long file never sits in memory whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile

from soundspan_plugins.shared.audio import (
    DECODE_CHUNK_SAMPLES,
    TRUNCATION_TOLERANCE_S,
    DecoderRefused,
    MonoResampler,
    UnreadableAudio,
    check_regular_file,
)


def decode_mono_with_libsndfile(path: Path | str, sample_rate: int) -> Iterator[np.ndarray]:
    """Yield the file's audio as float32 mono chunks at `sample_rate`, as `decode_mono` does.

    Raises ``DecoderRefused`` for what libsndfile cannot read, ``UnreadableAudio`` for files
    that are not regular, empty, or end well before the length their headers give.
    """
    path = Path(path)
    check_regular_file(path)
    with path.open("rb") as handle:  # an OSError stays one: the queue retries it
        try:
            sound = soundfile.SoundFile(handle)
        except soundfile.SoundFileError as error:
            raise DecoderRefused(
                path, f"it is not an audio file libsndfile can read ({_reason(error)})."
            ) from error
        with sound:
            resampler = MonoResampler(sound.samplerate, sample_rate)
            try:
                while len(block := sound.read(DECODE_CHUNK_SAMPLES, "float32", always_2d=True)):
                    out = resampler.push(block.mean(axis=1, dtype=np.float32))
                    if len(out):
                        yield out
            except soundfile.SoundFileError as error:
                raise DecoderRefused(
                    path, f"reading the file failed ({_reason(error)})."
                ) from error
            if resampler.source_samples == 0:
                raise DecoderRefused(path, "the file contains no audio samples.")
            decoded_seconds = resampler.source_samples / sound.samplerate
            declared_seconds = sound.frames / sound.samplerate
            if decoded_seconds < declared_seconds - TRUNCATION_TOLERANCE_S:
                raise UnreadableAudio(
                    path,
                    f"it ends after {decoded_seconds:.1f} s although it declares "
                    f"{declared_seconds:.1f} s; it is truncated or still being written.",
                )
            out = resampler.push(np.zeros(0, np.float32), last=True)
            if len(out):
                yield out


def _reason(error: soundfile.SoundFileError) -> str:
    return (getattr(error, "error_string", None) or str(error)).rstrip(".")
