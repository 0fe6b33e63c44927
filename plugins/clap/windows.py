"""The 10-s windows a track is embedded from, in numpy alone (a worker imports no torch).

Audio arrives decoded: 48 kHz mono float32, as one array or as an iterator of chunks. CLAP was
trained on 10-s clips, so a track is cut into consecutive 10-s windows, each embedded the way the
model expects a 10-s clip, and the unit-length window embeddings are averaged and re-normalised.

Long tracks are sampled, not embedded whole: while the audio streams past, every window is kept
until more than `max_windows` are; then every other kept window is dropped and from there on only
every 2nd window is kept, then every 4th, and so on. The result is at most `max_windows` windows
spaced evenly (every 2**k-th window, k as small as fits) across the whole track, chosen the same
way whether the audio comes as one array or in chunks, and without knowing the length ahead.
A final partial window is kept (repeat-padded, as CLAP pads short clips) when it is at least
MIN_TAIL_SECONDS long and falls on the current spacing, or when it is the whole track.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

SAMPLE_RATE = 48_000
WINDOW_SAMPLES = 480_000  # the 10-s clip every LAION CLAP model was trained on
WINDOW_SECONDS = WINDOW_SAMPLES // SAMPLE_RATE
DEFAULT_MAX_WINDOWS = 32
MIN_TAIL_SECONDS = 5
INT16_SCALE = 32767.0  # laion-clap's float32_to_int16 / int16_to_float32

AudioInput = np.ndarray | Iterable[np.ndarray]


def int16_round_trip(samples: np.ndarray) -> np.ndarray:
    """laion-clap's `int16_to_float32(float32_to_int16(x))`, which every inference path of the
    original (and its training data) applies before the mel front end: clip to [-1, 1], scale
    by 32767, truncate to int16, scale back. What lies below one int16 step becomes silence."""
    as_int16 = (np.clip(samples, -1.0, 1.0) * INT16_SCALE).astype(np.int16)
    return (as_int16 / INT16_SCALE).astype(np.float32)


def check_clips(windows) -> None:
    """Refuse what no CLAP tower can embed: clips longer than 10 s, empty or not finite."""
    for window in windows:
        if window.ndim != 1 or not 0 < window.size <= WINDOW_SAMPLES:
            raise ValueError(f"a clip must be 1-D with 1..{WINDOW_SAMPLES} samples: {window.shape}")
        if not np.isfinite(window).all():
            raise ValueError("a clip holds NaN or infinite samples")


def select_windows(audio: AudioInput, max_windows: int = DEFAULT_MAX_WINDOWS) -> list[np.ndarray]:
    """The 10-s windows a track is embedded from: all of them, or an even sample of max_windows."""
    if max_windows < 1:
        raise ValueError(f"max_windows must be at least 1, not {max_windows}")
    sampler = _WindowSampler(max_windows)
    for chunk in [audio] if isinstance(audio, np.ndarray) else audio:
        sampler.feed(_mono_float32(chunk))
    return sampler.finish()


class _WindowSampler:
    """Cuts a stream into 10-s windows and keeps every `stride`-th, doubling stride when full."""

    def __init__(self, max_windows: int) -> None:
        self.max_windows = max_windows
        self.stride = 1
        self.kept: list[np.ndarray] = []
        self.index = 0  # of the window being filled
        self.pieces: list[np.ndarray] = []
        self.filled = 0

    def feed(self, chunk: np.ndarray) -> None:
        while chunk.size:
            take = min(WINDOW_SAMPLES - self.filled, chunk.size)
            if self._on_stride():
                self.pieces.append(chunk[:take].copy())  # a decoder may reuse its buffer
            self.filled += take
            chunk = chunk[take:]
            if self.filled == WINDOW_SAMPLES:
                self._close_window()

    def finish(self) -> list[np.ndarray]:
        whole_track = self.index == 0
        if self.filled and (whole_track or self.filled >= MIN_TAIL_SECONDS * SAMPLE_RATE):
            self._close_window()
        if not self.kept:
            raise ValueError("the track has no audio samples")
        return self.kept

    def _on_stride(self) -> bool:
        return self.index % self.stride == 0

    def _close_window(self) -> None:
        if self._on_stride():
            self.kept.append(np.concatenate(self.pieces))
            if len(self.kept) > self.max_windows:
                self.kept = self.kept[::2]
                self.stride *= 2
        self.pieces = []
        self.filled = 0
        self.index += 1


def _mono_float32(chunk: np.ndarray) -> np.ndarray:
    samples = np.asarray(chunk, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"expected mono samples (1-D), got shape {samples.shape}: downmix first")
    return samples


def probe_clips() -> list[np.ndarray]:
    """Three 10-s clips of the kinds a library holds: a chord with noise, loud noise, and a
    quiet tone (where a lower precision loses most)."""
    rng = np.random.default_rng(0)
    t = np.arange(WINDOW_SAMPLES) / SAMPLE_RATE
    chord = sum(0.2 * np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6))
    return [
        (chord + 0.02 * rng.standard_normal(t.size)).astype(np.float32),
        rng.uniform(-0.9, 0.9, t.size).astype(np.float32),
        (0.01 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32),
    ]


def unit(vector: np.ndarray) -> np.ndarray:
    """`vector` scaled to unit length: a track's embedding from the mean of its windows'."""
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError("the window embeddings cancel out; no direction to normalise")
    return (vector / norm).astype(np.float32)
