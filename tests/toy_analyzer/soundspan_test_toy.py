"""A small, real analyzer for the queue and ingest tests, installed by entry point.

It reads WAV files with the standard library (so corrupt, truncated and non-audio files fail
as they would in a real analyzer), embeds each as [mean, spread, length] and records every
result it stores, so tests can prove each content was analyzed exactly once.
"""

import array
import asyncio
import dataclasses
import json
import os
import statistics
import time
import wave
from pathlib import Path

from pydantic import Field
from sqlalchemy import text

from soundspan_hooks import (
    AnalyzerInfo,
    PluginSettings,
    SettingsSection,
    TextEmbedding,
    UnreadableTrack,
    hookimpl,
)


class ToySettings(PluginSettings):
    version: str = Field("1", description="Bump to make stored results outdated.")
    workers: int = Field(2, ge=0, description="Tracks analyzed at once.")
    delay_seconds: float = Field(0.0, ge=0, description="Extra time each analysis takes.")
    poll_interval: float = Field(0.2, gt=0, description="Queue poll interval.")
    trained: bool = Field(False, description="Toy weights are never trained.")
    hold_until: Path | None = Field(
        None,
        description="Each analysis waits, claimed but before reading, until this file exists:"
        " a test holds a job mid-run for as long as it needs, with no race against a clock.",
    )
    described_as: Path | None = Field(
        None,
        description="A JSON object of AnalyzerInfo fields (state, reason, download, trained…)"
        " laid over the toy's own, read at each description, and `embeds_text` (whether it"
        " embeds text now): a test shows the analyzer in any state and changes it while the"
        " host runs.",
    )


def read_wave(path: Path) -> array.array:
    if path.stat().st_size == 0:
        raise UnreadableTrack(f"{path.name}: the file is empty")
    try:
        with wave.open(str(path), "rb") as audio:
            frames = audio.getnframes()
            data = audio.readframes(frames)
            expected = frames * audio.getsampwidth() * audio.getnchannels()
    except (wave.Error, EOFError) as error:
        raise UnreadableTrack(f"{path.name}: not a readable WAV file ({error})") from None
    if len(data) < expected:
        raise UnreadableTrack(f"{path.name}: truncated ({len(data)} of {expected} bytes)")
    return array.array("h", data)


def analyze(path: Path, delay: float) -> list[float]:
    time.sleep(delay)  # before reading, so a test can delete or kill in between
    samples = read_wave(path)
    if not samples:
        raise UnreadableTrack(f"{path.name}: no audio frames")
    scale = 32768.0
    return [
        statistics.fmean(samples) / scale,
        statistics.pstdev(samples) / scale,
        len(samples) / 16000.0,
    ]


@hookimpl
def soundspan_settings():
    return SettingsSection("toy", ToySettings)


@hookimpl
def soundspan_migrations():
    return Path(__file__).parent / "soundspan_test_toy_migrations"


@hookimpl
def soundspan_analyzers(host):
    return [ToyAnalyzer(host)]


class ToyAnalyzer:
    """The toy as the host keeps it (soundspan_hooks.Analyzer, and EmbedsText)."""

    name = "toy"

    def __init__(self, host):
        self.host = host

    def _described(self):
        settings = self.host.section("toy")
        info = AnalyzerInfo(
            name="toy",
            version=settings.version,
            model_id="toy-wave-stats",
            trained=False,
            dimension=3,
            embedding_table="toy_results",
            device="cpu",
            workers=settings.workers,
            poll_interval=settings.poll_interval,
        )
        fields = json.loads(settings.described_as.read_text()) if settings.described_as else {}
        embeds_text = fields.pop("embeds_text", False)
        return dataclasses.replace(info, **fields), embeds_text

    def info(self):
        return self._described()[0]

    async def embed_text(self, text):
        """Any text points the same way, where the description says the toy embeds text:
        enough to show a search answered by an embedding."""
        if not self._described()[1]:
            return None
        return TextEmbedding(analyzer="toy", vector=(0.0, 1.0, 0.0))

    async def details(self, content_id):
        return None

    async def analyze(self, track):
        settings = self.host.section("toy")
        # on the event loop, not in the thread: a host stopped meanwhile cancels the wait
        while settings.hold_until is not None and not settings.hold_until.exists():
            await asyncio.sleep(0.05)
        embedding = await asyncio.to_thread(analyze, track.path, settings.delay_seconds)

        async def store(connection):
            await connection.execute(
                text(
                    "INSERT INTO toy_results (content_id, embedding, version, worker_pid)"
                    " VALUES (:content_id, :embedding, :version, :pid)"
                    " ON CONFLICT (content_id) DO UPDATE SET embedding = excluded.embedding,"
                    " version = excluded.version, worker_pid = excluded.worker_pid"
                ),
                {
                    "content_id": track.content_id,
                    "embedding": str(embedding),
                    "version": settings.version,
                    "pid": os.getpid(),
                },
            )
            await connection.execute(
                text("INSERT INTO toy_stores (content_id, worker_pid) VALUES (:content_id, :pid)"),
                {"content_id": track.content_id, "pid": os.getpid()},
            )

        return store
