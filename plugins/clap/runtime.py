"""This host's CLAP as it starts: the weights found or downloaded, the text tower loaded in the
host, and the audio tower chosen (ONNX fp32 or int8, or torch) and started in its worker pool.

torch and transformers are imported only once a model is there to load, so a host with CLAP
switched off, or without weights, never pays for them.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from soundspan_hooks import HostContext, WorkerShare
from soundspan_plugins.clap.download import DownloadProgress, DownloadStopped
from soundspan_plugins.clap.errors import ClapUnavailable
from soundspan_plugins.clap.fetching import HubCheckpoint, fetch_with_retries, hub_checkpoint
from soundspan_plugins.clap.model_source import locate_model
from soundspan_plugins.clap.settings import NAME, ClapSettings
from soundspan_plugins.shared.pool import ModelPool

log = logging.getLogger(__name__)

DIMENSION = 512  # the clap_results column; every LAION CLAP projects to 512


@dataclass
class ClapRuntime:
    """This host's CLAP: the text tower, the audio pool, or why there are none."""

    settings: ClapSettings
    device: str
    model_id: str
    model: str  # what load_clap is given: a local path once a hub checkpoint is here
    tokenizer: str | None
    onnx_cache: Path  # the audio tower exported once per model: <data_dir>/models/clap/onnx
    trained: bool = False
    download: DownloadProgress | None = None  # while a hub checkpoint downloads
    downloader: asyncio.Task | None = None
    text_tower: Any = None  # LoadedClap with the text tower, in the host process
    pool: ModelPool | None = None
    reason: str | None = None
    detail: str | None = None  # why the tower running is not the one asked for
    text_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


RUNTIME = web.AppKey("soundspan_clap", ClapRuntime)


def make_runtime(settings: ClapSettings, data_dir: Path) -> ClapRuntime:
    """This host's CLAP before anything loads: a hub checkpoint read from its local copy."""
    device = "cpu" if settings.device == "auto" else settings.device
    model, tokenizer = settings.model, settings.tokenizer
    if (wanted := hub_checkpoint(settings.model, data_dir)) is not None:
        model, tokenizer = str(wanted.checkpoint), tokenizer or str(wanted.tokenizer)
    onnx_cache = data_dir / "models" / NAME / "onnx"
    return ClapRuntime(settings, device, settings.model, model, tokenizer, onnx_cache)


def worker_share(host: HostContext, runtime: ClapRuntime | None) -> WorkerShare:
    """CLAP's workers as the host shares them out: on a GPU (found or set), not the CPUs'."""
    device = runtime.device if runtime is not None else host.section(NAME).device
    return host.worker_share(NAME, on_gpu=device.startswith("cuda"))


async def start_workers(host: HostContext, runtime: ClapRuntime) -> None:
    """Start the audio pool, once the text tower has loaded and chosen the device."""
    workers = worker_share(host, runtime).workers
    if runtime.reason is None and workers > 0:
        await start_pool(runtime, workers)


async def download_then_start(
    host: HostContext, runtime: ClapRuntime, wanted: HubCheckpoint
) -> None:
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
        unavailable(runtime, error)
        return
    except DownloadStopped:
        return
    runtime.download = None
    await asyncio.to_thread(load_text_tower, runtime)
    await start_workers(host, runtime)


def load_text_tower(runtime: ClapRuntime) -> None:
    """Load the text tower into `runtime`, or set its reason for being unavailable."""
    settings = runtime.settings
    try:
        # before torch and transformers: their imports cost seconds of every start
        locate_model(runtime.model, settings.allow_download, settings.cache_dir)
    except ClapUnavailable as error:
        unavailable(runtime, error)
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
        unavailable(runtime, error)
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


def unavailable(runtime: ClapRuntime, error: ClapUnavailable) -> None:
    runtime.reason = str(error)
    log.warning("CLAP unavailable: %s", error)


async def start_pool(runtime: ClapRuntime, workers: int) -> None:
    from soundspan_plugins.clap.precision import choose_tower
    from soundspan_plugins.clap.worker import ModelSource, load_audio_tower, loaded_precision

    settings = runtime.settings
    source = ModelSource(
        runtime.model,
        runtime.tokenizer,
        settings.allow_download,
        settings.cache_dir,
        settings.allow_unsafe_checkpoint,
    )
    choice = await asyncio.to_thread(
        choose_tower, source, runtime.onnx_cache, settings.precision, runtime.device
    )
    runtime.detail = choice.detail
    pool = ModelPool(
        "CLAP",
        workers,
        load_audio_tower,
        (source, choice.onnx, runtime.device, settings.threads_per_worker),
        threads=settings.threads_per_worker,
    )
    await pool.warm_up()
    runtime.device = f"{runtime.device} ({await pool.run(loaded_precision)})"
    runtime.pool = pool
    log.info(
        "CLAP: %s on %s, %d workers x %d threads",
        runtime.model_id,
        runtime.device,
        workers,
        settings.threads_per_worker,
    )
