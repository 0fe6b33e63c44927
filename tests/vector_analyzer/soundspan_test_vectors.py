"""An analyzer whose embeddings are known in advance: a WAV's (or FLAC's) first eight samples
are its vector. Its tags are one word per track (north or south, by the first component's
sign), so it answers tag searches and map labels too. Installed by entry point."""

import wave
from pathlib import Path

import numpy as np
import soundfile
from sqlalchemy import text

from soundspan_hooks import (
    AnalyzerInfo,
    ContentScore,
    PluginSettings,
    SettingsSection,
    TagSearch,
    UnreadableTrack,
    hookimpl,
)

DIMENSION = 8


def read_vector(path: Path) -> list[float]:
    if path.suffix == ".flac":  # lossless too, and it carries title and artist tags
        try:
            samples = soundfile.read(str(path), frames=DIMENSION, dtype="int16")[0]
        except soundfile.LibsndfileError as error:
            raise UnreadableTrack(f"{path.name}: not a readable FLAC file ({error})") from None
    else:
        try:
            with wave.open(str(path), "rb") as audio:
                samples = np.frombuffer(audio.readframes(DIMENSION), dtype="<i2")
        except (wave.Error, EOFError) as error:
            raise UnreadableTrack(f"{path.name}: not a readable WAV file ({error})") from None
    if len(samples) < DIMENSION:
        raise UnreadableTrack(f"{path.name}: {len(samples)} samples, fewer than {DIMENSION}")
    return (samples / 32767).tolist()


def tag_of(vector: list[float]) -> str:
    return "north" if vector[0] >= 0 else "south"


@hookimpl
def soundspan_settings():
    return SettingsSection("vectors", PluginSettings)


@hookimpl
def soundspan_migrations():
    return Path(__file__).parent / "soundspan_test_vectors_migrations"


@hookimpl
def soundspan_analyzers(host):
    return [VectorAnalyzer(host)]


class VectorAnalyzer:
    """soundspan_hooks.Analyzer, and KeepsTags: north or south."""

    name = "vectors"

    def __init__(self, host):
        self.host = host

    def info(self):
        return AnalyzerInfo(
            name="vectors",
            version="1",
            model_id="first-samples",
            trained=False,
            dimension=DIMENSION,
            embedding_table="vector_results",
            device="cpu",
            workers=1,
            poll_interval=0.1,
        )

    async def details(self, content_id):
        return None

    async def analyze(self, track):
        vector = read_vector(track.path)

        async def store(connection):
            await connection.execute(
                text(
                    "INSERT INTO vector_results (content_id, embedding, tag)"
                    " VALUES (:id, :vector, :tag)"
                    " ON CONFLICT (content_id) DO UPDATE SET embedding = excluded.embedding"
                ),
                {"id": track.content_id, "vector": str(vector), "tag": tag_of(vector)},
            )

        return store

    async def search_tags(self, query, limit):
        words = query.split()
        async with self.host.engine.connect() as connection:
            rows = await connection.execute(
                text("SELECT content_id FROM vector_results WHERE tag = ANY(:words) LIMIT :limit"),
                {"words": words, "limit": limit},
            )
            results = tuple(ContentScore(row.content_id, 1.0) for row in rows)
        matched = tuple(word for word in ("north", "south") if word in words)
        return TagSearch(analyzer="vectors-tags", matched_tags=matched, results=results)

    async def content_labels(self, content_ids):
        return await self.content_tag(content_ids)

    async def content_tags(self, content_ids):
        return {content: [tag] for content, tag in (await self.content_tag(content_ids)).items()}

    async def content_tag(self, content_ids):
        async with self.host.engine.connect() as connection:
            rows = await connection.execute(
                text("SELECT content_id, tag FROM vector_results WHERE content_id = ANY(:ids)"),
                {"ids": content_ids},
            )
            return {row.content_id: row.tag for row in rows}
