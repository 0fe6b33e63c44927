"""A process pool whose worker processes each load a model once, and that heals itself.

Analysis runs in separate processes so a model's memory, threads and crashes stay out of the
host. When a worker process dies (killed, out of memory, a crash in native code) the pool is
replaced and the call raises WorkerCrashed, which the queue treats as a failed attempt to
retry: the next attempt runs in a fresh process.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

log = logging.getLogger(__name__)

Result = TypeVar("Result")

_loaded_model: Any = None  # in a worker process: what the pool's `load` returned


class WorkerCrashed(RuntimeError):
    """The worker process running an analysis died; the attempt can be retried."""


def _start_worker(load: Callable[..., Any], load_args: tuple[Any, ...], threads: int) -> None:
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(threads)
    global _loaded_model
    _loaded_model = load(*load_args)


def _run_with_model(task: Callable[..., Result], args: tuple[Any, ...]) -> Result:
    return task(_loaded_model, *args)


class ModelPool:
    """`workers` processes, each holding the model `load(*load_args)` returned."""

    def __init__(
        self,
        name: str,
        workers: int,
        load: Callable[..., Any],
        load_args: tuple[Any, ...] = (),
        threads: int = 1,
    ) -> None:
        self.name = name
        self.workers = workers
        self._start = (load, load_args, threads)
        self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        # spawn: a fork would copy the host's threads, event loop and database connections
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=self._start,
        )

    async def run(self, task: Callable[..., Result], *args: Any) -> Result:
        """Run `task(model, *args)` in a worker process."""
        executor = self._executor
        try:
            return await asyncio.get_running_loop().run_in_executor(
                executor, _run_with_model, task, args
            )
        except BrokenProcessPool:
            if self._executor is executor:  # the first to notice replaces it
                log.warning("%s: a worker process died; starting fresh ones", self.name)
                executor.shutdown(wait=False, cancel_futures=True)
                self._executor = self._new_executor()
            raise WorkerCrashed(
                f"the {self.name} worker process stopped (killed or out of memory)"
            ) from None

    async def warm_up(self) -> None:
        """Start every worker and load its model now, so a bad model shows at start-up."""
        await asyncio.gather(*(self.run(_loaded_model_type) for _ in range(self.workers)))

    async def close(self) -> None:
        executor = self._executor
        await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)


def _loaded_model_type(model: Any) -> str:
    return type(model).__name__
