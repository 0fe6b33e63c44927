"""This host's MusiCNN as it starts: the checkpoint converted to ONNX once, the precision
chosen, and the worker pool started in the background while the host already answers."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from soundspan_hooks import HostContext
from soundspan_plugins.musicnn import precision as quantization
from soundspan_plugins.musicnn.checkpoint import CheckpointError
from soundspan_plugins.musicnn.inference import cuda_available
from soundspan_plugins.musicnn.network import (
    ModelCard,
    ModelNotAvailable,
    checkpoint_index,
    checkpoint_sha256,
)
from soundspan_plugins.musicnn.onnx_export import CONVERTER_VERSION, ensure_onnx
from soundspan_plugins.musicnn.settings import NAME, MusicnnSettings
from soundspan_plugins.musicnn.worker import load_tagger
from soundspan_plugins.shared.pool import ModelPool, idle_seconds, run_in_own_process

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


@functools.cache
def model_version(model: str, precision: str = "fp32") -> str:
    """Changes with the weights, the converter and the front end: then results are redone.

    With the precision only where int8's results differ from float32's beyond the bound
    (quantization.version_suffix): a speed-up that changes nothing re-analyzes nothing.
    """
    digest = checkpoint_sha256(checkpoint_index(model))
    suffix = quantization.version_suffix(precision)
    return f"{model}-{digest[:12]}-c{CONVERTER_VERSION}-f{FRONTEND_VERSION}{suffix}"


def settings_of(host: HostContext) -> MusicnnSettings:
    settings = host.section(NAME)
    assert isinstance(settings, MusicnnSettings)
    return settings


@asynccontextmanager
async def running(host: HostContext) -> AsyncIterator[None]:
    """The plugin's lifespan: the pool starts in the background and closes at shut-down."""
    settings = settings_of(host)
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
    # the bound as the host reads it now: a quantizing process of its own would read its own
    choice_args = (onnx_path, card, settings.precision, runtime.device, quantization.MAX_TAG_DIFF)
    if await asyncio.to_thread(
        quantization.must_quantize, onnx_path, settings.precision, runtime.device
    ):
        log.info("MusiCNN: quantizing the model to int8 (once, in a process of its own) ...")
        choice = await run_in_own_process("MusiCNN int8", quantization.choose_model, *choice_args)
    else:
        choice = await asyncio.to_thread(quantization.choose_model, *choice_args)
    pool = ModelPool(
        "MusiCNN",
        host.worker_share(NAME, on_gpu=runtime.device == "cuda").workers,
        load_tagger,
        (str(choice.path), card, settings.threads_per_worker, runtime.device),
        threads=settings.threads_per_worker,
        idle_seconds=idle_seconds(settings.idle_minutes),
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
