"""This host's CLAP as it starts: the weights found or downloaded, the audio tower exported
once per model, the text tower loaded in the host, and the audio tower chosen (ONNX fp32 or
int8, or torch) and started in its worker pool.

torch and transformers are imported only once a model is there to load, so a host with CLAP
switched off, or without weights, never pays for them.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

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
from soundspan_plugins.shared.pool import ModelPool, idle_seconds, run_in_own_process

if TYPE_CHECKING:  # both import onnxruntime, and precision torch: not before a model is here
    from soundspan_plugins.clap.precision import TowerChoice
    from soundspan_plugins.clap.worker import ModelSource

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
    first_choice: TowerChoice | None = None  # made in a first start's own process
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
    on a first start the audio tower exported (make_tower_first), the text tower loaded, the
    audio tower chosen and its pool started. Jobs wait meanwhile; the status names the step."""
    try:
        if wanted is not None and not await _download(runtime, wanted):
            return
        if worker_share(host, runtime).workers > 0:
            await make_tower_first(runtime)
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


async def make_tower_first(runtime: ClapRuntime) -> None:
    """On a CPU, a first start exports the audio tower to ONNX (and quantizes it, for int8) in
    a process of its own, before the host imports torch for the text tower: that process peaks
    near 1.7 GiB for larger_clap_music (torch holds the weights three times over while it
    writes the graph; int8's quantizer a little less), and the host's own 350 MiB of torch and
    text tower would add to it, as int8's quantizer did in the host. Every later start finds
    the tower in the cache and spawns nothing."""
    from soundspan_plugins.clap import versions
    from soundspan_plugins.clap.tower_cache import tower_cached

    settings = runtime.settings
    if settings.device == "cuda":
        return
    try:
        await asyncio.to_thread(
            locate_model, runtime.model, settings.allow_download, settings.cache_dir
        )
    except ClapUnavailable:
        return  # load_text_tower says why
    source = model_source(runtime)
    if await asyncio.to_thread(tower_cached, source, runtime.onnx_cache, settings.precision):
        return
    runtime.preparing = "exporting the audio tower to ONNX (once per model)"
    log.info("CLAP: exporting the audio tower of %s to ONNX (once) ...", runtime.model)
    try:
        runtime.first_choice = await run_in_own_process(
            "CLAP export",
            _choose_cpu_tower,
            source,
            runtime.onnx_cache,
            settings.precision,
            settings.device,
            versions.INT8_MIN_COSINE,
        )
    except Exception as error:  # the process's end: killed, out of memory
        precision = await _import_precision()
        why = f"exporting the audio tower to ONNX failed ({error})"
        runtime.first_choice = precision.torch_instead(why)


def _choose_cpu_tower(
    source: ModelSource, cache_dir: Path, setting: str, device: str, min_cosine: float
) -> TowerChoice | None:
    """precision.choose_tower in the first start's own process, for `[clap] device` = `device`:
    None where "auto" finds a GPU (the workers run torch there: nothing to export)."""
    import torch

    from soundspan_plugins.clap.precision import choose_tower

    if device == "auto" and torch.cuda.is_available():
        return None
    return choose_tower(source, cache_dir, setting, "cpu", min_cosine)


def model_source(runtime: ClapRuntime) -> ModelSource:
    from soundspan_plugins.clap.worker import ModelSource

    settings = runtime.settings
    return ModelSource(
        runtime.model,
        runtime.tokenizer,
        settings.allow_download,
        settings.cache_dir,
        settings.allow_unsafe_checkpoint,
    )


async def _import_precision() -> ModuleType:
    """precision.py, imported off the event loop: onnxruntime's quantizer takes seconds to
    import (over ten on a busy NAS), and the status would not answer meanwhile."""
    return await asyncio.to_thread(importlib.import_module, "soundspan_plugins.clap.precision")


async def start_pool(runtime: ClapRuntime, workers: int) -> None:
    from soundspan_plugins.clap import versions
    from soundspan_plugins.clap.worker import load_audio_tower, loaded_precision

    settings = runtime.settings
    source = model_source(runtime)
    choice = runtime.first_choice if runtime.device == "cpu" else None
    if choice is None:
        runtime.preparing = "choosing the audio tower's precision"
        precision = await _import_precision()
        choice = await asyncio.to_thread(
            precision.choose_tower,
            source,
            runtime.onnx_cache,
            settings.precision,
            runtime.device,
            versions.INT8_MIN_COSINE,
        )
    runtime.detail = choice.detail
    runtime.preparing = "starting the worker processes"
    pool = ModelPool(
        "CLAP",
        workers,
        load_audio_tower,
        (source, choice.onnx, runtime.device, settings.threads_per_worker),
        threads=settings.threads_per_worker,
        idle_seconds=idle_seconds(settings.idle_minutes),
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
