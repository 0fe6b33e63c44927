"""Four-minute MP3 tracks for bench/musicnn.py --music synthetic: a real clip looped, and
synthetic songs (chords with harmonics, bass, kick/snare/hi-hat, noise; a key, tempo and seed
each), written with PyAV at 44.1 kHz, 192 kb/s.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parent.parent
REAL_CLIP = REPO / "tests" / "fixtures" / "musicnn" / "anttis_1918.mp3"
TRACK_SECONDS = 240.0
RATE = 44100


def write_mp3(path: Path, stereo: np.ndarray) -> None:
    """Encode [2, n] float32 samples in [-1, 1] at 44.1 kHz as a 192 kb/s MP3."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mp3", rate=RATE)
        stream.layout = "stereo"
        stream.bit_rate = 192_000
        block = 1152 * 64
        for start in range(0, stereo.shape[1], block):
            chunk = np.ascontiguousarray(stereo[:, start : start + block], np.float32)
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            frame.sample_rate = RATE
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def synthetic_song(seed: int) -> np.ndarray:
    """4 minutes of chords, bass, drums and noise: [2, n] float32 at 44.1 kHz."""
    rng = np.random.default_rng(seed)
    n = int(TRACK_SECONDS * RATE)
    t = np.arange(n, dtype=np.float64) / RATE
    bpm = 80 + 10 * seed
    beat = 60.0 / bpm
    root = 110.0 * 2 ** (rng.integers(0, 12) / 12)
    progression = [0, 5, 7, 3] if seed % 2 else [0, 9, 5, 7]
    bar = 4 * beat
    chord_index = (t // bar).astype(int) % len(progression)
    left = np.zeros(n)
    right = np.zeros(n)
    for interval in (0, 4 if seed % 3 else 3, 7, 12):
        frequency = root * 2 ** ((np.take(progression, chord_index) + interval) / 12)
        phase = 2 * np.pi * np.cumsum(frequency) / RATE
        voice = sum(np.sin(k * phase) / k**1.5 for k in range(1, 5))
        left += 0.06 * voice * (1 + 0.3 * np.sin(2 * np.pi * 0.2 * t))
        right += 0.06 * voice * (1 - 0.3 * np.sin(2 * np.pi * 0.2 * t))
    bass_frequency = root / 2 * 2 ** (np.take(progression, chord_index) / 12)
    bass = 0.15 * np.sin(2 * np.pi * np.cumsum(bass_frequency) / RATE)
    in_beat = np.mod(t, beat)
    kick = 0.5 * np.sin(2 * np.pi * (50 + 80 * np.exp(-in_beat * 30)) * in_beat)
    kick *= np.exp(-in_beat * 12)
    noise = rng.standard_normal(n)
    off_beat = np.mod(t + beat / 2, beat)
    snare = 0.2 * noise * np.exp(-off_beat * 20) * (np.mod(t // beat, 2) == 1)
    eighth = np.mod(t, beat / 2)
    hat = 0.05 * np.diff(noise, prepend=0) * np.exp(-eighth * 60)
    drums = kick + snare + hat + 0.01 * noise
    left += bass + drums
    right += bass + drums
    stereo = np.stack([left, right])
    stereo *= 0.9 / np.abs(stereo).max()
    return stereo.astype(np.float32)


def looped_real_clip() -> np.ndarray:
    """tests/fixtures/musicnn/anttis_1918.mp3 decoded and looped to 4 minutes, [2, n]."""
    with av.open(str(REAL_CLIP)) as container:
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=RATE)
        blocks = []
        for frame in container.decode(audio=0):
            blocks.extend(out.to_ndarray() for out in resampler.resample(frame))
        blocks.extend(out.to_ndarray() for out in resampler.resample(None))
    clip = np.concatenate(blocks, axis=1)
    n = int(TRACK_SECONDS * RATE)
    return np.tile(clip, (1, -(-n // clip.shape[1])))[:, :n].astype(np.float32)


def make_tracks(folder: Path, synthetic: int) -> list[Path]:
    """The real clip looped, plus `synthetic` synthetic songs, as 4-minute MP3 files."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "anttis_1918_looped.mp3"]
    write_mp3(paths[0], looped_real_clip())
    for seed in range(synthetic):
        paths.append(folder / f"synthetic_{seed}.mp3")
        write_mp3(paths[-1], synthetic_song(seed))
    return paths
