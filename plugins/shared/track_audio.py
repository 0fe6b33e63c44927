"""A track's audio as an analyzer reads it: FFmpeg first, libsndfile where FFmpeg refuses the
file, and never more than the analyzer's cap on the audio it analyzes.

Every file a player plays should get analyzed: FFmpeg refuses some ordinary files that
libvorbis plays (an Ogg Vorbis stream whose headers are written twice before the audio, as in
Debian's `hyperrogue-music`). The cap bounds the work a file can cause whatever its size or
the length it claims (a 1 GiB MP3 of silence holds 18 hours).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import numpy as np
from pydantic import Field

from soundspan_plugins.shared.audio import DecoderRefused, UnreadableAudio, decode_mono
from soundspan_plugins.shared.sndfile_audio import decode_mono_with_libsndfile

Decoder = Callable[[Path, int], Generator[np.ndarray, None, None]]
DECODERS: tuple[tuple[str, Decoder], ...] = (
    ("FFmpeg", decode_mono),
    ("libsndfile", decode_mono_with_libsndfile),
)


def max_audio_minutes_setting() -> float:
    """The `max_audio_minutes` setting of an analyzer's section: one cap, said one way."""
    return Field(
        60.0,
        gt=0,
        description="Minutes of a track's audio analyzed at most: a longer file (a long mix, or a "
        "file whose size or header claims hours) is analyzed on its first minutes only, and its "
        "result says so (capped). Bounds the work one file can cause.",
    )


class TrackAudio:
    """A file's audio as float32 mono chunks at `sample_rate`: its first `max_seconds` at most.

    Iterate it once; then `decoder` names the decoder that read it, `seconds` how much audio
    came out and `capped` whether the file held more. A decoder that refuses the file before
    giving any audio hands it to the next; one that fails later fails the file (what came out
    is already analyzed). When every decoder refuses, the reason names each and what it said.
    """

    def __init__(self, path: Path | str, sample_rate: int, max_seconds: float | None = None):
        self.path = Path(path)
        self.sample_rate = sample_rate
        self.max_samples = None if max_seconds is None else round(max_seconds * sample_rate)
        self.decoder: str | None = None
        self.samples = 0
        self.capped = False

    @property
    def seconds(self) -> float:
        return self.samples / self.sample_rate

    def __iter__(self) -> Iterator[np.ndarray]:
        refusals: list[str] = []
        for name, decode in DECODERS:
            chunks = decode(self.path, self.sample_rate)
            try:
                first = next(chunks, None)
                self.decoder = name
                yield from self._up_to_cap(first, chunks)
                return
            except UnreadableAudio as caught:
                # refused before any audio came out: the next decoder may read the file
                if isinstance(caught, DecoderRefused) and self.decoder is None:
                    refusals.append(f"{name}: {caught.reason}")
                    continue
                if not refusals:
                    raise
                reason = " ".join([*refusals, f"{name}: {caught.reason}"])
                raise UnreadableAudio(self.path, reason) from caught
        raise UnreadableAudio(self.path, "no decoder can read it. " + " ".join(refusals))

    def _up_to_cap(
        self, first: np.ndarray | None, chunks: Generator[np.ndarray, None, None]
    ) -> Iterator[np.ndarray]:
        try:
            for chunk in itertools.chain([] if first is None else [first], chunks):
                if self.max_samples is not None and self.samples + len(chunk) > self.max_samples:
                    chunk = chunk[: self.max_samples - self.samples]
                    self.capped = True
                self.samples += len(chunk)
                if len(chunk):
                    yield chunk
                if self.capped:
                    return
        finally:
            chunks.close()  # stop decoding now: closes the file, whatever follows the cap
