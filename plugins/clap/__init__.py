"""CLAP analyzer: a text-audio embedding of every whole track, and text queries embedded for search.

Weights come from a local Hugging Face directory, a hub id already in the local cache, or an
original laion-clap `.pt`. When none can be loaded the analyzer says so in the status and
everything else keeps working. The audio tower runs in this plugin's process pool; the text
tower stays in the host so a search never waits behind the analysis queue.

torch and transformers are imported only once the plugin starts, so a host with CLAP switched
off never pays for them.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiohttp import web
from pydantic import Field
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from soundspan_hooks import (
    AnalyzerInfo,
    Check,
    HostContext,
    PluginSettings,
    SettingsSection,
    TextEmbedding,
    TrackFile,
    UnreadableTrack,
    hookimpl,
    legacy_env,
)
from soundspan_plugins.shared.audio import UnreadableAudio
from soundspan_plugins.shared.pool import ModelPool

log = logging.getLogger(__name__)

NAME = "clap"
DIMENSION = 512  # the clap_results column; every LAION CLAP projects to 512


class ClapSettings(PluginSettings):
    model: str = Field(
        "laion/larger_clap_music",
        description="A Hugging Face model directory, a hub id in the local cache, or an "
        "original laion-clap .pt checkpoint.",
    )
    tokenizer: str | None = Field(
        None, description="A RoBERTa tokenizer directory, for a .pt checkpoint's text tower."
    )
    allow_download: bool = Field(
        False, description="Let a hub id be downloaded into the cache at start-up."
    )
    cache_dir: str | None = Field(None, description="Hugging Face cache (default: HF_HOME).")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where the audio tower runs; CUDA uses fp16."
    )
    workers: int = legacy_env("CLAP_WORKERS", 2, "Analysis workers (0: remote ones only).", ge=0)
    threads_per_worker: int = legacy_env(
        "CLAP_THREADS_PER_WORKER", 1, "CPU threads per worker.", ge=1
    )
    sleep_interval: float = legacy_env(
        "CLAP_SLEEP_INTERVAL", 5.0, "Queue poll interval (seconds).", gt=0
    )
    max_windows: int = Field(
        12,
        ge=1,
        description="10-s windows embedded per track: up to 2 minutes all of them, longer "
        "tracks an even sample over their whole length (every 2nd, 4th, ... window).",
    )
    batch_size: int = Field(4, ge=1, description="Windows per inference batch (memory bound).")


@dataclass
class ClapRuntime:
    """This host's CLAP: the text tower, the audio pool, or why there are none."""

    settings: ClapSettings
    device: str
    model_id: str
    trained: bool = False
    text_tower: Any = None  # LoadedClap with the text tower, in the host process
    pool: ModelPool | None = None
    reason: str | None = None
    text_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


RUNTIME = web.AppKey("soundspan_clap", ClapRuntime)


@hookimpl
def soundspan_settings() -> SettingsSection:
    return SettingsSection(NAME, ClapSettings)


@hookimpl
def soundspan_migrations() -> Path:
    return Path(__file__).parent / "migrations"


@hookimpl
def soundspan_analyzer(host: HostContext) -> AnalyzerInfo:
    settings = _settings(host)
    runtime = host.app.get(RUNTIME)
    if runtime is None:
        state, reason = "loading", None
    elif runtime.pool is None and runtime.reason is not None:
        state, reason = "unavailable", runtime.reason
    else:
        state, reason = "ready", None
    return AnalyzerInfo(
        name=NAME,
        version=model_version(settings),
        model_id=runtime.model_id if runtime else settings.model,
        trained=runtime.trained if runtime else False,
        dimension=DIMENSION,
        device=runtime.device if runtime else settings.device,
        state=state,
        reason=reason,
        embeds_text=True,
        embedding_table="clap_results",
        workers=settings.workers,
        poll_interval=settings.sleep_interval,
    )


@functools.cache
def model_version(settings: ClapSettings) -> str:
    """Changes with the weights (their files' names, sizes and times) and the window recipe.

    Read once per process: every status, search and stored result asks for it.
    """
    fingerprint = hashlib.sha256(settings.model.encode())
    location = Path(settings.model).expanduser()
    files = sorted(location.iterdir()) if location.is_dir() else [location]
    for path in files:
        if path.is_file():
            stat = path.stat()
            fingerprint.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return f"{fingerprint.hexdigest()[:12]}-w10s-max{settings.max_windows}"


@hookimpl
def soundspan_lifespan(host: HostContext):
    return _running(host)


@asynccontextmanager
async def _running(host: HostContext) -> AsyncIterator[None]:
    settings = _settings(host)
    runtime = await asyncio.to_thread(_load_text_tower, settings)
    if runtime.reason is None and settings.workers > 0:
        await _start_pool(runtime)
    host.app[RUNTIME] = runtime
    try:
        yield
    finally:
        if runtime.pool is not None:
            await runtime.pool.close()


def _load_text_tower(settings: ClapSettings) -> ClapRuntime:
    import torch

    from soundspan_plugins.clap.loading import ClapUnavailable, load_clap

    cuda = torch.cuda.is_available()
    log.info("CLAP: CUDA available: %s", cuda)
    device = "cuda" if settings.device == "cuda" or (settings.device == "auto" and cuda) else "cpu"
    runtime = ClapRuntime(settings=settings, device=device, model_id=settings.model)
    try:
        text_tower = load_clap(
            settings.model,
            tokenizer=settings.tokenizer,
            towers=("text",),
            threads=1,
            allow_download=settings.allow_download,
            cache_dir=settings.cache_dir,
        )
    except ClapUnavailable as error:
        runtime.reason = str(error)
        log.warning("CLAP unavailable: %s", error)
        return runtime
    info = text_tower.info
    if info.embedding_dim != DIMENSION:
        runtime.reason = (
            f"CLAP model {info.model_id} embeds in {info.embedding_dim} dimensions; "
            f"only {DIMENSION}-dimensional (LAION) CLAP models are supported"
        )
        return runtime
    if device == "cuda" and not cuda:
        runtime.reason = "[clap] device = cuda, but torch sees no GPU here"
        return runtime
    runtime.text_tower, runtime.model_id, runtime.trained = text_tower, info.model_id, info.trained
    if not info.trained:
        log.warning("CLAP model %s is not trained: %s", info.model_id, info.untrained_reason)
    return runtime


@hookimpl
def soundspan_doctor(sections, music_dir, data_dir) -> list[Check]:
    """Loads the text tower as the host would, so the answer is the host's own."""
    import torch

    settings: ClapSettings = sections[NAME]
    runtime = _load_text_tower(settings)
    if runtime.reason is not None:
        weights = Check("clap weights", "fail", runtime.reason)
    elif not runtime.trained:
        weights = Check(
            "clap weights",
            "warn",
            f"{runtime.model_id} loads, but its weights are untrained",
            "point [clap] model at trained LAION CLAP weights",
        )
    else:
        weights = Check("clap weights", "ok", f"{runtime.model_id}, trained")
    cuda = torch.cuda.is_available()
    gpu = Check(
        "clap GPU",
        "ok" if cuda or settings.device != "cuda" else "fail",
        f"CUDA available: {cuda}; runs on {runtime.device}",
        None if cuda else "for a GPU: a CUDA build of torch and the NVIDIA driver",
    )
    return [weights, gpu]


async def _start_pool(runtime: ClapRuntime) -> None:
    from soundspan_plugins.clap.worker import ModelSource, load_audio_tower

    settings = runtime.settings
    source = ModelSource(
        settings.model, settings.tokenizer, settings.allow_download, settings.cache_dir
    )
    pool = ModelPool(
        "CLAP",
        settings.workers,
        load_audio_tower,
        (source, runtime.device, settings.threads_per_worker),
        threads=settings.threads_per_worker,
    )
    await pool.warm_up()
    runtime.pool = pool
    log.info(
        "CLAP: %s on %s, %d workers x %d threads",
        runtime.model_id,
        runtime.device,
        settings.workers,
        settings.threads_per_worker,
    )


@hookimpl
def soundspan_analyze_track(host: HostContext, analyzer: str, track: TrackFile):
    if analyzer != NAME:
        return None
    return _analyze(host, track)


async def _analyze(host: HostContext, track: TrackFile):
    from soundspan_plugins.clap.worker import TrackEmbedding, embed_file

    runtime = host.app[RUNTIME]
    assert runtime.pool is not None
    settings = runtime.settings
    try:
        result: TrackEmbedding = await runtime.pool.run(
            embed_file, str(track.path), settings.max_windows, settings.batch_size
        )
    except UnreadableAudio as error:
        raise UnreadableTrack(error.reason) from None

    async def store(connection: AsyncConnection) -> None:
        await connection.execute(
            text(
                "INSERT INTO clap_results (content_id, model_id, version, embedding, windows)"
                " VALUES (:content_id, :model_id, :version, CAST(:embedding AS vector), :windows)"
                " ON CONFLICT (content_id) DO UPDATE SET model_id = excluded.model_id,"
                " version = excluded.version, embedding = excluded.embedding,"
                " windows = excluded.windows, analyzed_at = now()"
            ),
            {
                "content_id": track.content_id,
                "model_id": runtime.model_id,
                "version": model_version(settings),
                "embedding": json.dumps(result.embedding),
                "windows": result.windows,
            },
        )

    return store


@hookimpl
def soundspan_embed_text(host: HostContext, text: str):
    runtime = host.app.get(RUNTIME)
    if runtime is None or runtime.text_tower is None:
        return None
    return _embed_text(runtime, text)


async def _embed_text(runtime: ClapRuntime, query: str) -> TextEmbedding:
    from soundspan_plugins.clap.embedding import embed_text

    async with runtime.text_lock:  # one query at a time through the shared model
        [vector] = await asyncio.to_thread(embed_text, runtime.text_tower, [query])
    return TextEmbedding(analyzer=NAME, vector=tuple(float(value) for value in vector))


@hookimpl
def soundspan_track_details(host: HostContext, content_id: str):
    return _track_details(host, content_id)


async def _track_details(host: HostContext, content_id: str) -> dict | None:
    async with host.engine.connect() as connection:
        row = (
            await connection.execute(
                text(
                    "SELECT model_id, windows, analyzed_at FROM clap_results"
                    " WHERE content_id = :content_id"
                ),
                {"content_id": content_id},
            )
        ).first()
    if row is None:
        return None
    return {
        NAME: {
            "model_id": row.model_id,
            "windows": row.windows,
            "analyzed_at": row.analyzed_at.isoformat(),
        }
    }


def _settings(host: HostContext) -> ClapSettings:
    settings = host.section(NAME)
    assert isinstance(settings, ClapSettings)
    return settings
