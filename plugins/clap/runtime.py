"""This host's CLAP as it starts: the weights found or downloaded, the text tower loaded in the
host, and the audio tower chosen (ONNX fp32 or int8, or torch) and started in its worker pool.

torch and transformers are imported only once a model is there to load, so a host with CLAP
switched off, or without weights, never pays for them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from soundspan_hooks import HostContext, WorkerShare
from soundspan_plugins.clap.download import DownloadProgress, DownloadStopped
from soundspan_plugins.clap.errors import ClapUnavailable, missing_extra
from soundspan_plugins.clap.fetching import (
    HubCheckpoint,
    fetch_with_retries,
    hub_checkpoint,
    not_downloaded_reason,
)
from soundspan_plugins.clap.model_source import locate_model
from soundspan_plugins.clap.settings import NAME, ClapSettings
from soundspan_plugins.shared.pool import ModelPool, run_in_own_process

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
    starting: asyncio.Task | None = None  # download, text tower, audio tower, pool
    preparing: str | None = None  # the step of starting under way, for the status
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


async def prepare(host: HostContext, runtime: ClapRuntime, wanted: HubCheckpoint | None) -> None:
    """Everything CLAP needs before it works, in the background while the host already
    answers (MusiCNN and the API serve meanwhile): the hub checkpoint `wanted` downloaded,
    the text tower loaded, the audio tower chosen (exported once, in a process of its own)
    and its pool started. Jobs wait meanwhile; the status names the step."""
    try:
        if wanted is not None and not await _download(runtime, wanted):
            return
        runtime.preparing = "loading the text tower"
        await asyncio.to_thread(load_text_tower, runtime)
        workers = worker_share(host, runtime).workers
        if runtime.reason is None and workers > 0:
            await start_pool(runtime, workers)
    except Exception as error:  # a bug here must leave CLAP unavailable, not loading forever
        log.exception("CLAP could not start")
        runtime.reason = f"CLAP could not start: {type(error).__name__}: {error}"
    finally:
        runtime.preparing = None


async def _download(runtime: ClapRuntime, wanted: HubCheckpoint) -> bool:
    """Fetch the hub checkpoint, retrying while it cannot be; False where it never will be."""
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
        return False
    except DownloadStopped:
        return False
    runtime.download = None
    return True


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
    from soundspan_plugins.clap import precision
    from soundspan_plugins.clap.onnx_export import cached_export, ensure_exported
    from soundspan_plugins.clap.worker import ModelSource, load_audio_tower, loaded_precision

    settings = runtime.settings
    source = ModelSource(
        runtime.model,
        runtime.tokenizer,
        settings.allow_download,
        settings.cache_dir,
        settings.allow_unsafe_checkpoint,
    )
    choice = None
    if runtime.device == "cpu" and cached_export(source, runtime.onnx_cache) is None:
        # torch's export holds a second copy of the model and its trace: ~1.5 GB more for
        # larger_clap_music, given back to the system when the process ends
        runtime.preparing = "exporting the audio tower to ONNX (once per model)"
        log.info("CLAP: exporting the audio tower of %s to ONNX (once) ...", runtime.model)
        try:
            await run_in_own_process("CLAP export", ensure_exported, source, runtime.onnx_cache)
        except Exception as error:  # the tracer's, onnxruntime's, or the process's end
            choice = precision.torch_instead(f"exporting the audio tower to ONNX failed ({error})")
    if choice is None:
        runtime.preparing = "choosing the audio tower's precision"
        choice = await asyncio.to_thread(
            precision.choose_tower,
            source,
            runtime.onnx_cache,
            settings.precision,
            runtime.device,
            precision.INT8_MIN_COSINE,
        )
    runtime.detail = choice.detail
    runtime.preparing = "starting the worker processes"
    pool = ModelPool(
        "CLAP",
        workers,
        load_audio_tower,
        (source, choice.onnx, runtime.device, settings.threads_per_worker),
        threads=settings.threads_per_worker,
    )
    try:
        await pool.warm_up()
        loaded = await pool.run(loaded_precision)
    except BaseException as error:  # a stop meanwhile, or a tower the workers cannot load
        await pool.close()
        if not isinstance(error, Exception):
            raise
        runtime.reason = f"CLAP's worker processes could not load the audio tower ({error})"
        log.error("CLAP unavailable: %s", runtime.reason)
        return
    runtime.device = f"{runtime.device} ({loaded})"
    runtime.pool = pool
    log.info(
        "CLAP: %s on %s, %d workers x %d threads",
        runtime.model_id,
        runtime.device,
        workers,
        settings.threads_per_worker,
    )


def settings_of(host: HostContext) -> ClapSettings:
    settings = host.section(NAME)
    assert isinstance(settings, ClapSettings)
    return settings


@asynccontextmanager
async def running(host: HostContext) -> AsyncIterator[None]:
    """The plugin's lifespan: CLAP prepared in the background (see prepare), stopped wherever
    it is at shut-down, and its pool closed."""
    settings = settings_of(host)
    runtime = make_runtime(settings, Path(host.data_dir))
    wanted = hub_checkpoint(settings.model, Path(host.data_dir))
    if wanted is not None and not wanted.missing(settings.tokenizer is None):
        wanted = None  # here already: loaded as local files
    stopping = threading.Event()
    if (missing := missing_extra()) is not None:  # before the download the extra would need
        unavailable(runtime, missing)
    elif wanted is not None and not settings.allow_download:
        runtime.reason = not_downloaded_reason(wanted)
        log.warning("CLAP unavailable: %s", runtime.reason)
    else:
        if wanted is not None:
            runtime.download = DownloadProgress(stop=stopping)
        runtime.starting = asyncio.create_task(prepare(host, runtime, wanted))
    host.app[RUNTIME] = runtime
    try:
        yield
    finally:
        if runtime.starting is not None:
            stopping.set()  # ends a transfer thread at its next write
            runtime.starting.cancel()
            await asyncio.gather(runtime.starting, return_exceptions=True)
        if runtime.pool is not None:
            await runtime.pool.close()
