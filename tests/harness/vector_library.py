"""A library whose embeddings are known: the vectors test analyzer (tests/vector_analyzer)
reads a WAV's first eight samples as its embedding, so every list is known in advance.

Eleven tracks lie on the arc from e0 to e1 (arc/00 .. arc/10); five others point elsewhere,
three of them "south" (a negative first component).
"""

from __future__ import annotations

import wave
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
from aiohttp.test_utils import TestClient

from soundspan_hooks import HOST
from tests.harness.library import eventually, settled, tracks

ARC = 11


def unit(vector) -> np.ndarray:
    vector = np.asarray(vector, dtype=float)
    return vector / np.linalg.norm(vector)


def axis(index: int, size: int = 8) -> np.ndarray:
    return np.eye(size)[index]


def arc_vector(step: int) -> np.ndarray:
    angle = step / (ARC - 1) * np.pi / 2
    return unit(np.cos(angle) * axis(0) + np.sin(angle) * axis(1) + 0.02 * axis(2))


def arc(step: int) -> str:
    """The path of the arc's track `step`."""
    return f"arc/{step:02}.wav"


OTHERS = {
    "elsewhere/up.wav": unit(axis(3) + 0.1 * axis(0)),
    "elsewhere/side.wav": unit(axis(4) + 0.1 * axis(0)),
    "south/a.wav": unit(-axis(0) + 0.3 * axis(5)),
    "south/b.wav": unit(-axis(0) + 0.3 * axis(6)),
    "south/caf\udce9.wav": unit(-axis(0) + 0.3 * axis(7)),  # a Latin-1 name, not UTF-8
}


def write_vector_wav(path: Path, vector: np.ndarray) -> None:
    """A WAV whose first eight samples are the vector, then a little silence."""
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = np.concatenate([np.asarray(vector) * 0.9, np.zeros(800)])
    with wave.open(str(path), "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(16000)
        audio.writeframes(np.round(samples * 32767).astype("<i2").tobytes())


def write_vector_library(music_dir: Path) -> int:
    """The arc and the others in `music_dir`; returns how many tracks that is."""
    for step in range(ARC):
        write_vector_wav(music_dir / arc(step), arc_vector(step))
    for path, vector in OTHERS.items():
        write_vector_wav(music_dir / path, vector)
    return ARC + len(OTHERS)


async def analyzed_library(
    fast_host: Callable[..., Awaitable[TestClient]], music_dir: Path, settings: str = ""
) -> TestClient:
    """A host (the `fast_host` fixture, the vectors analyzer installed) on the arc and the
    others, every track analyzed; a WAV under Playlists/ beside them, which ingest leaves
    alone."""
    count = write_vector_library(music_dir)
    write_vector_wav(music_dir / "Playlists" / "stray.wav", axis(0))
    client = await fast_host(settings)
    await eventually(lambda: settled(client.app[HOST].engine, count), what="library")
    return client


async def ids(client: TestClient) -> dict[str, str]:
    """path -> track id."""
    return {path: row[0] for path, row in (await tracks(client.app[HOST].engine)).items()}
