"""CLAP analyzer: a text-audio embedding of every whole track, and text queries embedded for search.

Weights come from a laion-clap checkpoint on the hub (by default the one soundspan uses,
downloaded in the background into the data dir on first start), a local Hugging Face directory,
a hub id already in the local cache, or a local laion-clap `.pt`. While they download, or when
none can be loaded, the analyzer says so in the status and everything else keeps working. The
audio tower runs in this plugin's process pool; the text tower stays in the host so a search
never waits behind the analysis queue.

The hooks live here; runtime.py starts the model (text tower, audio pool), settings.py holds
the [clap] section, doctor.py the doctor's checks. torch and transformers are imported only once
the plugin starts, so a host with CLAP switched off never pays for them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from soundspan_hooks import (
    AnalyzerInfo,
    Check,
    HostContext,
    SettingsSection,
    TextEmbedding,
    TrackFile,
    UnreadableTrack,
    hookimpl,
)
from soundspan_plugins.clap.download import DownloadProgress
from soundspan_plugins.clap.fetching import hub_checkpoint, not_downloaded_reason
from soundspan_plugins.clap.runtime import (
    DIMENSION,
    RUNTIME,
    ClapRuntime,
    download_then_start,
    load_text_tower,
    make_runtime,
    start_workers,
    worker_share,
)
from soundspan_plugins.clap.settings import NAME, ClapSettings
from soundspan_plugins.clap.versions import model_version
from soundspan_plugins.shared.audio import UnreadableAudio

log = logging.getLogger(__name__)


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
    share = worker_share(host, runtime)
    download = None
    if runtime is None:
        state, reason = "loading", None
    elif runtime.pool is None and runtime.reason is not None:
        state, reason = "unavailable", runtime.reason
    elif runtime.download is not None:
        state, reason, download = "downloading", None, runtime.download.as_status()
    elif runtime.text_tower is None or (runtime.pool is None and share.workers > 0):
        state, reason = "loading", None
    else:
        state, reason = "ready", None
    return AnalyzerInfo(
        name=NAME,
        version=model_version(settings.model, settings.max_windows, settings.precision),
        model_id=runtime.model_id if runtime else settings.model,
        trained=runtime.trained if runtime else False,
        dimension=DIMENSION,
        device=runtime.device if runtime else settings.device,
        state=state,
        reason=reason,
        embeds_text=True,
        embedding_table="clap_results",
        workers=share.workers,
        workers_from=share.explained,
        poll_interval=settings.sleep_interval,
        download=download,
        detail=runtime.detail if runtime else None,
    )


@hookimpl
def soundspan_lifespan(host: HostContext):
    return _running(host)


@asynccontextmanager
async def _running(host: HostContext) -> AsyncIterator[None]:
    settings = _settings(host)
    runtime = make_runtime(settings, Path(host.data_dir))
    wanted = hub_checkpoint(settings.model, Path(host.data_dir))
    stopping = threading.Event()
    if wanted is not None and wanted.missing(settings.tokenizer is None):
        if settings.allow_download:
            runtime.download = DownloadProgress(stop=stopping)
            runtime.downloader = asyncio.create_task(download_then_start(host, runtime, wanted))
        else:
            runtime.reason = not_downloaded_reason(wanted)
            log.warning("CLAP unavailable: %s", runtime.reason)
    else:
        await asyncio.to_thread(load_text_tower, runtime)
        await start_workers(host, runtime)
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


@hookimpl
def soundspan_doctor(sections, music_dir, data_dir) -> list[Check]:
    """Loads the text tower as the host would, so the answer is the host's own."""
    from soundspan_plugins.clap.doctor import doctor_checks

    return doctor_checks(sections, data_dir)


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
            embed_file,
            str(track.path),
            settings.max_windows,
            settings.batch_size,
            settings.max_audio_minutes * 60,
        )
    except UnreadableAudio as error:
        raise UnreadableTrack(error.reason) from None

    async def store(connection: AsyncConnection) -> None:
        await connection.execute(
            text(
                "INSERT INTO clap_results (content_id, model_id, version, embedding, windows,"
                " decoder, analyzed_seconds, capped)"
                " VALUES (:content_id, :model_id, :version, CAST(:embedding AS vector), :windows,"
                " :decoder, :analyzed_seconds, :capped)"
                " ON CONFLICT (content_id) DO UPDATE SET model_id = excluded.model_id,"
                " version = excluded.version, embedding = excluded.embedding,"
                " windows = excluded.windows, decoder = excluded.decoder,"
                " analyzed_seconds = excluded.analyzed_seconds, capped = excluded.capped,"
                " analyzed_at = now()"
            ),
            {
                "content_id": track.content_id,
                "model_id": runtime.model_id,
                "version": model_version(settings.model, settings.max_windows, settings.precision),
                "embedding": json.dumps(result.embedding),
                "windows": result.windows,
                "decoder": result.decoder,
                "analyzed_seconds": result.analyzed_seconds,
                "capped": result.capped,
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
                    "SELECT model_id, windows, decoder, analyzed_seconds, capped, analyzed_at"
                    " FROM clap_results WHERE content_id = :content_id"
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
            "decoder": row.decoder,  # which decoder read the track; NULL for older results
            "analyzed_seconds": row.analyzed_seconds,
            "capped": row.capped,
            "analyzed_at": row.analyzed_at.isoformat(),
        }
    }


def _settings(host: HostContext) -> ClapSettings:
    settings = host.section(NAME)
    assert isinstance(settings, ClapSettings)
    return settings
