"""This host's CLAP as it starts: the weights found or downloaded, the audio tower exported
once per model, the text tower checked (it runs in a process of its own that searches start:
text_tower.py), and the audio tower chosen (ONNX fp32 or int8, or torch) and started in its
worker pool.

The host itself imports torch and transformers only for a torch audio tower (CUDA, or an
export torch refused); on a CPU they live in the processes that need them.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

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
from soundspan_plugins.clap.text_tower import TextTowerFacts, text_pool, text_tower_facts
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
    text_tower: ModelPool | None = None  # its process, started by searches (text_tower.py)
    pool: ModelPool | None = None
    reason: str | None = None
    detail: str | None = None  # why the tower running is not the one asked for
    first_choice: TowerChoice | None = None  # made in a first start's own process


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
    on a first start the audio tower exported (make_tower_first), the text tower checked, the
    audio tower chosen and its pool started. Jobs wait meanwhile; the status names the step."""
    try:
        if wanted is not None and not await _download(runtime, wanted):
            return
        if worker_share(host, runtime).workers > 0:
            await make_tower_first(runtime)
        runtime.preparing = "loading the text tower"
        await check_text_tower(runtime)
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


async def check_text_tower(runtime: ClapRuntime) -> None:
    """Load the text tower once in a short-lived process of its own, to learn what it is, then
    keep its pool for searches (no process runs until the first one); or set the reason CLAP
    is unavailable."""
    settings = runtime.settings
    try:
        # before a process spawns to import torch and transformers: seconds of every start
        await asyncio.to_thread(
            locate_model, runtime.model, settings.allow_download, settings.cache_dir
        )
    except ClapUnavailable as error:
        unavailable(runtime, error)
        return
    source = model_source(runtime)
    facts = await run_in_own_process("CLAP text tower", text_tower_facts, source)
    if accept_text_tower(runtime, facts):
        runtime.text_tower = text_pool(source, settings.idle_minutes)


def accept_text_tower(runtime: ClapRuntime, facts: TextTowerFacts | str) -> bool:
    """Keep in `runtime` what the text tower is (text_tower_facts), and where the audio tower
    runs; False, with the reason set, where CLAP cannot use this model."""
    if isinstance(facts, str):
        runtime.reason = facts
        log.warning("CLAP unavailable: %s", facts)
        return False
    settings = runtime.settings
    log.info("CLAP: CUDA available: %s", facts.cuda)
    cuda = settings.device == "cuda" or (settings.device == "auto" and facts.cuda)
    runtime.device = "cuda" if cuda else "cpu"
    if facts.embedding_dim != DIMENSION:
        runtime.reason = (
            f"CLAP model {facts.model_id} embeds in {facts.embedding_dim} dimensions; "
            f"only {DIMENSION}-dimensional (LAION) CLAP models are supported"
        )
        return False
    if cuda and not facts.cuda:
        runtime.reason = "[clap] device = cuda, but torch sees no GPU here"
        return False
    runtime.trained = facts.trained
    if runtime.model == settings.model:  # a hub checkpoint keeps its hub name
        runtime.model_id = facts.model_id
    if not facts.trained:
        log.warning("CLAP model %s is not trained: %s", facts.model_id, facts.untrained_reason)
    return True


def unavailable(runtime: ClapRuntime, error: ClapUnavailable) -> None:
    runtime.reason = str(error)
    log.warning("CLAP unavailable: %s", error)


async def make_tower_first(runtime: ClapRuntime) -> None:
    """On a CPU, a first start exports the audio tower to ONNX in a process of its own, then
    checks it (and quantizes it, for int8) in another that imports no torch, before the text
    tower's check, which spawns a process too (one at a time): the export peaks near 0.82 GiB
    for larger_clap_music (the trace), the check near half of it. Every later start finds the
    tower in the cache and spawns nothing for it."""
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
        return  # check_text_tower says why
    source = model_source(runtime)
    if await asyncio.to_thread(tower_cached, source, runtime.onnx_cache, settings.precision):
        return
    runtime.preparing = "exporting the audio tower to ONNX (once per model)"
    log.info("CLAP: exporting the audio tower of %s to ONNX (once) ...", runtime.model)
    precision = await _import_precision()
    failed = "exporting the audio tower to ONNX failed ({})"
    try:
        export = await run_in_own_process(
            "CLAP export", precision.export_first, source, runtime.onnx_cache, settings.device
        )
        if export.on_gpu:
            return
        if export.failed is not None:
            runtime.first_choice = precision.torch_instead(failed.format(export.failed))
            return
        runtime.preparing = "checking the exported audio tower (once per model)"
        runtime.first_choice = await run_in_own_process(
            "CLAP export's check",
            precision.choose_tower,
            source,
            runtime.onnx_cache,
            settings.precision,
            "cpu",
            versions.INT8_MIN_COSINE,
        )
    except Exception as error:  # a process's end: killed, out of memory
        runtime.first_choice = precision.torch_instead(failed.format(error))


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
    """precision.py, imported off the event loop: its onnxruntime takes seconds to import on a
    busy NAS, and the status would not answer meanwhile."""
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
        for pool in (runtime.pool, runtime.text_tower):
            if pool is not None:
                await pool.close()
