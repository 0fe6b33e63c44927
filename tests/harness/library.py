"""Helpers for tests that drive a real host over a real music folder."""

from __future__ import annotations

import asyncio
import math
import struct
import time
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from soundspan_hooks import HOST

SAMPLE_RATE = 16000
T = TypeVar("T")


def write_wav(path: Path, frequency: float = 440.0, seconds: float = 0.1) -> Path:
    """A mono 16-bit WAV tone; each frequency is a different content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = int(SAMPLE_RATE * seconds)
    samples = (
        int(12000 * math.sin(2 * math.pi * frequency * index / SAMPLE_RATE))
        for index in range(frames)
    )
    with wave.open(str(path), "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(SAMPLE_RATE)
        audio.writeframes(struct.pack(f"<{frames}h", *samples))
    return path


def write_wave(path: Path, samples: np.ndarray, rate: int) -> None:
    """Float samples in [-1, 1], shaped [frames] or [frames, channels], as 16-bit WAV."""
    frames = samples.reshape(len(samples), -1)
    with wave.open(str(path), "wb") as audio:
        audio.setnchannels(frames.shape[1])
        audio.setsampwidth(2)
        audio.setframerate(rate)
        audio.writeframes((frames * 32767).astype("<i2").tobytes())


def tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    time = np.arange(int(seconds * rate)) / rate
    signal = 0.3 * np.sin(2 * np.pi * 330 * time) * np.sin(2 * np.pi * 0.5 * time)
    return np.repeat(signal[:, None], channels, axis=1)


async def eventually(
    check: Callable[[], Awaitable[T]], timeout: float = 30.0, what: str = "condition"
) -> T:
    """Wait until `check` holds and return what it found; the host works in the background."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := await check():
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def rows(engine: AsyncEngine, sql: str, **params: object) -> list:
    async with engine.connect() as connection:
        return list(await connection.execute(text(sql), params))


async def scalar(engine: AsyncEngine, sql: str, **params: object):
    async with engine.connect() as connection:
        return (await connection.execute(text(sql), params)).scalar()


async def tracks(engine: AsyncEngine) -> dict[str, tuple[str, str, bool]]:
    """path -> (track id, content id, missing)."""
    return {
        row.path: (row.id, row.content_id, row.missing_since is not None)
        for row in await rows(engine, "SELECT id, path, content_id, missing_since FROM tracks")
    }


async def jobs(engine: AsyncEngine, analyzer: str = "toy") -> dict[str, tuple[str, str | None]]:
    """content id -> (state, error)."""
    return {
        row.content_id: (row.state, row.error)
        for row in await rows(
            engine,
            "SELECT content_id, state, error FROM analysis_jobs WHERE analyzer = :analyzer",
            analyzer=analyzer,
        )
    }


async def settled(engine: AsyncEngine, count: int) -> bool:
    """`count` present tracks, and no job left pending or running: a failed job counts as
    finished, so a test that expects analyses follows this with `all_done`."""
    present = await scalar(engine, "SELECT count(*) FROM tracks WHERE missing_since IS NULL")
    busy = await scalar(
        engine, "SELECT count(*) FROM analysis_jobs WHERE state IN ('pending', 'running')"
    )
    return present == count and busy == 0


async def all_done(engine: AsyncEngine, analyzer: str, count: int) -> None:
    """Assert that `analyzer` has `count` jobs and every one ended `done`, with no error."""
    found = await jobs(engine, analyzer)
    assert len(found) == count and set(found.values()) == {("done", None)}, found


async def jobs_running_in(engine: AsyncEngine, pid: int) -> list[str]:
    """Content ids of the jobs that the worker process `pid` holds now."""
    running = await rows(
        engine, "SELECT content_id, lease_owner FROM analysis_jobs WHERE state = 'running'"
    )
    return [row.content_id for row in running if f":{pid}:" in (row.lease_owner or "")]


async def stores_per_content(engine: AsyncEngine) -> dict[str, int]:
    return {
        row.content_id: row.stores
        for row in await rows(
            engine, "SELECT content_id, count(*) AS stores FROM toy_stores GROUP BY content_id"
        )
    }


async def present_paths(engine: AsyncEngine, paths: set[str]) -> bool:
    """Exactly these paths are present tracks."""
    present = {path for path, (_, _, missing) in (await tracks(engine)).items() if not missing}
    return present == paths


async def job_versions(engine: AsyncEngine) -> list[tuple[str, str]]:
    """(state, model version) of each analysis job, by content."""
    found = await rows(engine, "SELECT state, version FROM analysis_jobs ORDER BY content_id")
    return [(row.state, row.version) for row in found]


async def analyzed_toy_library(fast_host, music_dir: Path) -> AsyncEngine:
    """Two WAVs analyzed by the toy at version 1, by a host stopped again: results of a model
    that a later host's version may make outdated."""
    client = await fast_host('[toy]\nversion = "1"\n')
    engine = client.app[HOST].engine
    write_wav(music_dir / "a.wav", 200)
    write_wav(music_dir / "b.wav", 210)
    await eventually(lambda: settled(engine, 2), what="the first analysis")
    await client.close()
    return engine
