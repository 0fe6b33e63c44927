"""CLAP analyzer: a text-audio embedding of every whole track, and text queries embedded for search.

Weights come from a laion-clap checkpoint on the hub (by default the one soundspan uses,
downloaded in the background into the data dir on first start), a local Hugging Face directory,
a hub id already in the local cache, or a local laion-clap `.pt`. While they download, or when
none can be loaded, the analyzer says so in the status and everything else keeps working. The
audio tower runs in this plugin's process pool; the text tower stays in the host so a search
never waits behind the analysis queue.

torch and transformers are imported only once the plugin starts, so a host with CLAP switched
off never pays for them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
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
from soundspan_plugins.clap.download import DownloadProgress, DownloadStopped
from soundspan_plugins.clap.errors import ClapUnavailable
from soundspan_plugins.clap.fetching import (
    DEFAULT_MODEL,
    HubCheckpoint,
    fetch_with_retries,
    hub_checkpoint,
    not_downloaded_reason,
)
from soundspan_plugins.clap.model_source import locate_model
from soundspan_plugins.clap.versions import model_version
from soundspan_plugins.shared.audio import UnreadableAudio
from soundspan_plugins.shared.pool import ModelPool

log = logging.getLogger(__name__)

NAME = "clap"
DIMENSION = 512  # the clap_results column; every LAION CLAP projects to 512


class ClapSettings(PluginSettings):
    model: str = Field(
        DEFAULT_MODEL,
        description="A laion-clap checkpoint on the hub (owner/repo:file.pt, downloaded into "
        "<data_dir>/models/clap), an original laion-clap .pt file, a Hugging Face model "
        "directory, or a hub model id.",
    )
    tokenizer: str | None = Field(
        None,
        description="A RoBERTa tokenizer directory, for a .pt checkpoint's text tower "
        "(default: roberta-base's, downloaded beside a hub checkpoint).",
    )
    allow_download: bool = Field(
        True,
        description="Download a hub checkpoint (in the background) or a hub model id (at "
        "start-up); false: only files already here.",
    )
    download_retry_seconds: float = Field(
        30.0,
        gt=0,
        description="Wait after a failed download before the next try; doubles each time, "
        "up to an hour.",
    )
    cache_dir: str | None = Field(None, description="Hugging Face cache (default: HF_HOME).")
    allow_unsafe_checkpoint: bool = Field(
        False,
        description="Load a .pt checkpoint that holds Python objects besides its weights, "
        "which runs code from the file (torch.load weights_only=False): only for files you "
        "trust.",
    )
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
    model: str  # what load_clap is given: a local path once a hub checkpoint is here
    tokenizer: str | None
    trained: bool = False
    download: DownloadProgress | None = None  # while a hub checkpoint downloads
    downloader: asyncio.Task | None = None
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
    download = None
    if runtime is None:
        state, reason = "loading", None
    elif runtime.pool is None and runtime.reason is not None:
        state, reason = "unavailable", runtime.reason
    elif runtime.download is not None:
        state, reason, download = "downloading", None, runtime.download.as_status()
    elif runtime.text_tower is None or (runtime.pool is None and settings.workers > 0):
        state, reason = "loading", None
    else:
        state, reason = "ready", None
    return AnalyzerInfo(
        name=NAME,
        version=model_version(settings.model, settings.max_windows),
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
        download=download,
    )


@hookimpl
def soundspan_lifespan(host: HostContext):
    return _running(host)


@asynccontextmanager
async def _running(host: HostContext) -> AsyncIterator[None]:
    settings = _settings(host)
    runtime = _runtime(settings, Path(host.data_dir))
    wanted = hub_checkpoint(settings.model, Path(host.data_dir))
    stopping = threading.Event()
    if wanted is not None and wanted.missing(settings.tokenizer is None):
        if settings.allow_download:
            runtime.download = DownloadProgress(stop=stopping)
            runtime.downloader = asyncio.create_task(_download_then_start(runtime, wanted))
        else:
            runtime.reason = not_downloaded_reason(wanted)
            log.warning("CLAP unavailable: %s", runtime.reason)
    else:
        await asyncio.to_thread(_load_text_tower, runtime)
        if runtime.reason is None and settings.workers > 0:
            await _start_pool(runtime)
    host.app[RUNTIME] = runtime
    try:
        yield
    finally:
        if runtime.downloader is not None:
            stopping.set()  # ends the transfer thread at its next write
            runtime.downloader.cancel()
            await asyncio.gather(runtime.downloader, return_exceptions=True)
        if runtime.pool is not None:
            await runtime.pool.close()


def _runtime(settings: ClapSettings, data_dir: Path) -> ClapRuntime:
    """This host's CLAP before anything loads: a hub checkpoint read from its local copy."""
    device = "cpu" if settings.device == "auto" else settings.device
    model, tokenizer = settings.model, settings.tokenizer
    if (wanted := hub_checkpoint(settings.model, data_dir)) is not None:
        model, tokenizer = str(wanted.checkpoint), tokenizer or str(wanted.tokenizer)
    return ClapRuntime(settings, device, settings.model, model, tokenizer)


async def _download_then_start(runtime: ClapRuntime, wanted: HubCheckpoint) -> None:
    """Download in the background, then load as from local files; jobs wait meanwhile."""
    settings, progress = runtime.settings, runtime.download
    assert progress is not None

    def report(reason: str | None) -> None:
        runtime.reason = reason

    try:
        await fetch_with_retries(
            wanted, settings.tokenizer is None, progress, report, settings.download_retry_seconds
        )
    except ClapUnavailable as error:
        runtime.download = None
        _unavailable(runtime, error)
        return
    except DownloadStopped:
        return
    runtime.download = None
    await asyncio.to_thread(_load_text_tower, runtime)
    if runtime.reason is None and settings.workers > 0:
        await _start_pool(runtime)


def _load_text_tower(runtime: ClapRuntime) -> None:
    """Load the text tower into `runtime`, or set its reason for being unavailable."""
    settings = runtime.settings
    try:
        # before torch and transformers: their imports cost seconds of every start
        locate_model(runtime.model, settings.allow_download, settings.cache_dir)
    except ClapUnavailable as error:
        _unavailable(runtime, error)
        return

    import torch

    from soundspan_plugins.clap.loading import load_clap

    cuda = torch.cuda.is_available()
    log.info("CLAP: CUDA available: %s", cuda)
    device = "cuda" if settings.device == "cuda" or (settings.device == "auto" and cuda) else "cpu"
    runtime.device = device
    try:
        text_tower = load_clap(
            runtime.model,
            tokenizer=runtime.tokenizer,
            towers=("text",),
            threads=1,
            allow_download=settings.allow_download,
            cache_dir=settings.cache_dir,
            allow_unsafe_checkpoint=settings.allow_unsafe_checkpoint,
        )
    except ClapUnavailable as error:
        _unavailable(runtime, error)
        return
    info = text_tower.info
    if info.embedding_dim != DIMENSION:
        runtime.reason = (
            f"CLAP model {info.model_id} embeds in {info.embedding_dim} dimensions; "
            f"only {DIMENSION}-dimensional (LAION) CLAP models are supported"
        )
        return
    if device == "cuda" and not cuda:
        runtime.reason = "[clap] device = cuda, but torch sees no GPU here"
        return
    runtime.text_tower, runtime.trained = text_tower, info.trained
    if runtime.model == settings.model:  # a hub checkpoint keeps its hub name
        runtime.model_id = info.model_id
    if not info.trained:
        log.warning("CLAP model %s is not trained: %s", info.model_id, info.untrained_reason)


def _unavailable(runtime: ClapRuntime, error: ClapUnavailable) -> None:
    runtime.reason = str(error)
    log.warning("CLAP unavailable: %s", error)


@hookimpl
def soundspan_doctor(sections, music_dir, data_dir) -> list[Check]:
    """Loads the text tower as the host would, so the answer is the host's own."""
    import torch

    settings: ClapSettings = sections[NAME]
    runtime = _runtime(settings, Path(data_dir))
    wanted = hub_checkpoint(settings.model, Path(data_dir))
    if wanted is not None and (missing := wanted.missing(settings.tokenizer is None)):
        weights = _not_downloaded_check(settings, wanted, missing)
    else:
        _load_text_tower(runtime)
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


def _not_downloaded_check(settings: ClapSettings, wanted: HubCheckpoint, missing) -> Check:
    """What a running host does about a checkpoint not here yet, with the partial bytes so far."""
    partial = sum(
        part.stat().st_size
        for file in missing
        for part in file.destination.parent.glob(f"{file.destination.name}.*.part")
    )
    names = ", ".join(file.filename for file in missing)
    if not settings.allow_download:
        return Check("clap weights", "fail", not_downloaded_reason(wanted))
    return Check(
        "clap weights",
        "warn",
        f"{names} not downloaded yet ({partial / 1e6:.0f} MB so far in {wanted.checkpoint.parent}"
        f"); the host downloads it in the background, resuming, and shows the progress in its "
        f"status",
        "start the host with network access to the hub (or HF_ENDPOINT), or set [clap] model "
        "to a local .pt file",
    )


async def _start_pool(runtime: ClapRuntime) -> None:
    from soundspan_plugins.clap.worker import ModelSource, load_audio_tower, loaded_precision

    settings = runtime.settings
    source = ModelSource(
        runtime.model,
        runtime.tokenizer,
        settings.allow_download,
        settings.cache_dir,
        settings.allow_unsafe_checkpoint,
    )
    pool = ModelPool(
        "CLAP",
        settings.workers,
        load_audio_tower,
        (source, runtime.device, settings.threads_per_worker),
        threads=settings.threads_per_worker,
    )
    await pool.warm_up()
    if runtime.device == "cuda":  # float16, unless it disagreed with float32 at load
        runtime.device = f"cuda ({await pool.run(loaded_precision)})"
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
                "version": model_version(settings.model, settings.max_windows),
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
