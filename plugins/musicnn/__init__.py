"""MusiCNN analyzer: the authors' trained MSD/MTT weights on onnxruntime, in its own process pool.

Every track gets the mean probability of each of the model's 50 tags (genres, moods,
instruments), its top tags, and a 200-d embedding (the penultimate layer) for similarity.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from soundspan_hooks import (
    AnalyzerInfo,
    Check,
    ContentScore,
    HostContext,
    SettingsSection,
    TagSearch,
    TrackFile,
    UnreadableTrack,
    hookimpl,
)
from soundspan_plugins.musicnn.checkpoint import CheckpointError
from soundspan_plugins.musicnn.inference import cuda_available
from soundspan_plugins.musicnn.model_cache import CONVERTER_VERSION, ensure_onnx
from soundspan_plugins.musicnn.network import (
    EMBEDDING_DIM,
    TAGS_BY_DATASET,
    ModelCard,
    ModelNotAvailable,
    checkpoint_index,
    checkpoint_sha256,
)
from soundspan_plugins.musicnn.quantization import choose_model, version_suffix
from soundspan_plugins.musicnn.settings import NAME, MusicnnSettings
from soundspan_plugins.musicnn.tags import GENRE_TAGS
from soundspan_plugins.musicnn.worker import TrackTags, analyze_file, load_tagger
from soundspan_plugins.shared.audio import UnreadableAudio
from soundspan_plugins.shared.pool import ModelPool

log = logging.getLogger(__name__)

FRONTEND_VERSION = 1  # bump when the front end's output changes


@dataclass
class MusicnnRuntime:
    """This host's MusiCNN: the converted model, its pool, or why there is none."""

    settings: MusicnnSettings
    device: str
    card: ModelCard | None = None
    pool: ModelPool | None = None
    reason: str | None = None
    precision: str | None = None  # what the workers run: fp32 or int8
    note: str | None = None  # why the precision asked for is not the one running
    loading: bool = False  # the model is converting or its workers are starting


RUNTIME = web.AppKey("soundspan_musicnn", MusicnnRuntime)


@hookimpl
def soundspan_settings() -> SettingsSection:
    return SettingsSection(NAME, MusicnnSettings)


@hookimpl
def soundspan_migrations() -> Path:
    return Path(__file__).parent / "migrations"


@hookimpl
def soundspan_analyzer(host: HostContext) -> AnalyzerInfo:
    settings = _settings(host)
    runtime = host.app.get(RUNTIME)
    try:
        version = model_version(settings.model, settings.precision)
    except (ModelNotAvailable, OSError) as error:
        return _describe(host, f"{settings.model}-missing", "unavailable", str(error), runtime)
    if runtime is not None and runtime.reason is not None:
        return _describe(host, version, "unavailable", runtime.reason, runtime)
    if runtime is None or runtime.loading:
        return _describe(host, version, "loading", None, runtime)
    return _describe(host, version, "ready", runtime.note, runtime)


def _describe(host: HostContext, version, state, reason, runtime) -> AnalyzerInfo:
    settings = _settings(host)
    device = runtime.device if runtime else settings.device
    share = host.worker_share(NAME, on_gpu=device == "cuda")
    return AnalyzerInfo(
        name=NAME,
        version=version,
        model_id=settings.model,
        trained=True,  # the authors' published checkpoints, read from the musicnn wheel
        dimension=EMBEDDING_DIM,
        embedding_table="musicnn_results",
        device=device,
        state=state,
        reason=reason,
        workers=share.workers,
        workers_from=share.explained,
        poll_interval=settings.sleep_interval,
    )


@functools.cache
def model_version(model: str, precision: str = "fp32") -> str:
    """Changes with the weights, the converter and the front end: then results are redone.

    With the precision only where int8's results differ from float32's beyond the bound
    (quantization.version_suffix): a speed-up that changes nothing re-analyzes nothing.
    """
    digest = checkpoint_sha256(checkpoint_index(model))
    suffix = version_suffix(precision)
    return f"{model}-{digest[:12]}-c{CONVERTER_VERSION}-f{FRONTEND_VERSION}{suffix}"


@hookimpl
def soundspan_lifespan(host: HostContext):
    return _running(host)


@asynccontextmanager
async def _running(host: HostContext) -> AsyncIterator[None]:
    settings = _settings(host)
    cuda = cuda_available()
    log.info("MusiCNN: CUDA available: %s", cuda)
    device = "cuda" if settings.device == "cuda" or (settings.device == "auto" and cuda) else "cpu"
    runtime = MusicnnRuntime(settings=settings, device=device)
    host.app[RUNTIME] = runtime
    starting = None
    if device == "cuda" and not cuda:
        runtime.reason = "[musicnn] device = cuda, but onnxruntime sees no GPU here"
    elif host.worker_share(NAME, on_gpu=device == "cuda").workers > 0:
        # the host answers while the model converts and its workers start (a second or two; a
        # minute for the first conversion): MusiCNN says "loading" and its jobs wait meanwhile
        runtime.loading = True
        starting = asyncio.create_task(_start_pool(host, runtime))
    try:
        yield
    finally:
        if starting is not None:
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
        if runtime.pool is not None:
            await runtime.pool.close()


async def _start_pool(host: HostContext, runtime: MusicnnRuntime) -> None:
    try:
        await _load_model(host, runtime)
    finally:
        runtime.loading = False


async def _load_model(host: HostContext, runtime: MusicnnRuntime) -> None:
    settings = runtime.settings
    try:
        onnx_path, card = await asyncio.to_thread(
            ensure_onnx, settings.model, host.data_dir / "models" / NAME
        )
    except (ModelNotAvailable, CheckpointError, OSError) as error:
        runtime.reason = str(error)
        log.error("MusiCNN unavailable: %s", error)
        return
    choice = await asyncio.to_thread(
        choose_model, onnx_path, card, settings.precision, runtime.device
    )
    pool = ModelPool(
        "MusiCNN",
        host.worker_share(NAME, on_gpu=runtime.device == "cuda").workers,
        load_tagger,
        (str(choice.path), card, settings.threads_per_worker, runtime.device),
        threads=settings.threads_per_worker,
    )
    runtime.card, runtime.pool = card, pool  # from here the plugin's lifespan closes it
    try:
        await pool.warm_up()
    except Exception as error:  # the model did not load in a worker process
        runtime.reason = f"MusiCNN's worker processes could not load {choice.path} ({error})"
        log.error("MusiCNN unavailable: %s", runtime.reason)
        return
    runtime.precision, runtime.note = choice.precision, choice.note
    log.info(
        "MusiCNN: %s (%s, %s) on %s, %d workers x %d threads",
        card.model_id,
        choice.path.name,
        choice.precision,
        runtime.device,
        pool.workers,
        settings.threads_per_worker,
    )


@hookimpl
def soundspan_analyze_track(host: HostContext, analyzer: str, track: TrackFile):
    if analyzer != NAME:
        return None
    return _analyze(host, track)


async def _analyze(host: HostContext, track: TrackFile):
    runtime = host.app[RUNTIME]
    assert runtime.pool is not None and runtime.card is not None
    version = model_version(runtime.settings.model, runtime.settings.precision)
    try:
        result: TrackTags = await runtime.pool.run(
            analyze_file,
            str(track.path),
            runtime.settings.batch_size,
            runtime.settings.max_audio_minutes * 60,
        )
    except UnreadableAudio as error:
        raise UnreadableTrack(error.reason) from None
    tags = dict(zip(runtime.card.tags, result.tag_probabilities, strict=True))
    top = sorted(tags.items(), key=lambda item: item[1], reverse=True)[: runtime.settings.top_tags]

    async def store(connection: AsyncConnection) -> None:
        await connection.execute(
            text(
                "INSERT INTO musicnn_results"
                " (content_id, model_id, version, tags, top_tags, embedding, patches,"
                " decoder, analyzed_seconds, capped)"
                " VALUES (:content_id, :model_id, :version, CAST(:tags AS jsonb),"
                " CAST(:top_tags AS jsonb), CAST(:embedding AS vector), :patches,"
                " :decoder, :analyzed_seconds, :capped)"
                " ON CONFLICT (content_id) DO UPDATE SET model_id = excluded.model_id,"
                " version = excluded.version, tags = excluded.tags,"
                " top_tags = excluded.top_tags, embedding = excluded.embedding,"
                " patches = excluded.patches, decoder = excluded.decoder,"
                " analyzed_seconds = excluded.analyzed_seconds, capped = excluded.capped,"
                " analyzed_at = now()"
            ),
            {
                "content_id": track.content_id,
                "model_id": runtime.card.model_id,
                "version": version,
                "tags": json.dumps(tags),
                "top_tags": json.dumps(top),
                "embedding": json.dumps(result.embedding),
                "patches": result.patches,
                "decoder": result.decoder,
                "analyzed_seconds": result.analyzed_seconds,
                "capped": result.capped,
            },
        )

    return store


@hookimpl
def soundspan_track_details(host: HostContext, content_id: str):
    return _track_details(host, content_id)


async def _track_details(host: HostContext, content_id: str) -> dict | None:
    async with host.engine.connect() as connection:
        row = (
            await connection.execute(
                text(
                    "SELECT model_id, tags, top_tags, patches, decoder, analyzed_seconds,"
                    " capped, analyzed_at FROM musicnn_results WHERE content_id = :content_id"
                ),
                {"content_id": content_id},
            )
        ).first()
    if row is None:
        return None
    return {
        NAME: {
            "model_id": row.model_id,
            "tags": row.tags,
            "top_tags": [{"tag": tag, "probability": score} for tag, score in row.top_tags],
            "patches": row.patches,
            "decoder": row.decoder,  # which decoder read the track; NULL for older results
            "analyzed_seconds": row.analyzed_seconds,
            "capped": row.capped,
            "analyzed_at": row.analyzed_at.isoformat(),
        }
    }


@hookimpl
def soundspan_doctor(sections, music_dir, data_dir) -> list[Check]:
    settings: MusicnnSettings = sections[NAME]
    checks = []
    try:
        index = checkpoint_index(settings.model)
        found = index.is_file()
    except ModelNotAvailable as error:
        found, index = False, error
    if found:
        checks.append(Check("musicnn weights", "ok", f"{settings.model}: {index.parent}"))
    else:
        checks.append(
            Check(
                "musicnn weights",
                "fail",
                f"{settings.model} checkpoint not found ({index})",
                "pip install --no-deps musicnn==0.1.0 (make run does it)",
            )
        )
    cuda = cuda_available()
    if settings.device == "cuda" and not cuda:
        checks.append(
            Check(
                "musicnn GPU",
                "fail",
                "device = cuda, but onnxruntime has no CUDA provider",
                "install onnxruntime-gpu and the NVIDIA driver, or set [musicnn] device = auto",
            )
        )
    else:
        detail = "CUDA available: True" if cuda else "CUDA available: False; runs on CPU"
        fix = None if cuda else "for a GPU: onnxruntime-gpu and the NVIDIA driver (optional)"
        checks.append(Check("musicnn GPU", "ok", detail, fix))
    return checks


@hookimpl
def soundspan_content_labels(host: HostContext, content_ids: list[str]):
    return _genre_labels(host, content_ids)


async def _genre_labels(host: HostContext, content_ids: list[str]) -> dict[str, str]:
    """Each content's likeliest genre tag."""
    async with host.engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT r.content_id, genre.tag FROM musicnn_results r CROSS JOIN LATERAL"
                " (SELECT key AS tag FROM jsonb_each_text(r.tags) WHERE key = ANY(:genres)"
                "  ORDER BY value::float DESC LIMIT 1) genre"
                " WHERE r.content_id = ANY(:ids)"
            ),
            {"genres": sorted(GENRE_TAGS), "ids": content_ids},
        )
        return {row.content_id: row.tag for row in rows}


@hookimpl
def soundspan_content_tags(host: HostContext, content_ids: list[str]):
    return _top_tags(host, content_ids)


async def _top_tags(host: HostContext, content_ids: list[str]) -> dict[str, list[str]]:
    """Each content's top tags (as many as [musicnn] top_tags kept), likeliest first."""
    async with host.engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT content_id, top_tags FROM musicnn_results WHERE content_id = ANY(:ids)"),
            {"ids": content_ids},
        )
        return {row.content_id: [tag for tag, _ in row.top_tags] for row in rows}


@hookimpl
def soundspan_search_tags(host: HostContext, text: str, limit: int):
    return _search_tags(host, text, limit)


async def _search_tags(host: HostContext, query: str, limit: int) -> TagSearch:
    """Contents ranked by the summed probability of the model's tags the query names."""
    vocabulary = TAGS_BY_DATASET[_settings(host).model.split("_")[0]]
    matched = tags_named_in(query, vocabulary)
    if not matched:
        return TagSearch(analyzer="musicnn-tags", matched_tags=(), results=())
    score = " + ".join(f"(tags ->> :tag{index})::float" for index in range(len(matched)))
    async with host.engine.connect() as connection:
        rows = await connection.execute(
            text(
                f"SELECT content_id, ({score}) / :count AS score FROM musicnn_results"
                " WHERE EXISTS (SELECT 1 FROM tracks t WHERE t.content_id ="
                " musicnn_results.content_id AND t.missing_since IS NULL)"
                " ORDER BY score DESC, content_id LIMIT :limit"
            ),
            {
                **{f"tag{index}": tag for index, tag in enumerate(matched)},
                "count": len(matched),
                "limit": limit,
            },
        )
        results = tuple(ContentScore(row.content_id, float(row.score)) for row in rows)
    return TagSearch(analyzer="musicnn-tags", matched_tags=matched, results=results)


def tags_named_in(query: str, vocabulary: tuple[str, ...]) -> tuple[str, ...]:
    """The tags whose every word appears in the query ("chill jazz piano" -> chill, jazz)."""
    tokens = re.findall(r"[a-z0-9&-]+", query.lower().replace("hip hop", "hip-hop"))
    words = {
        part for token in tokens for part in (token, token.replace("-", ""), *token.split("-"))
    }
    named = []
    for tag in vocabulary:
        tag_words = re.findall(r"[a-z0-9&-]+", tag.lower())
        if all(word in words or word.replace("-", "") in words for word in tag_words):
            named.append(tag)
    return tuple(named)


def _settings(host: HostContext) -> MusicnnSettings:
    settings = host.section(NAME)
    assert isinstance(settings, MusicnnSettings)
    return settings
