"""A process pool whose worker processes each load a model once, and that heals itself.

Analysis runs in separate processes so a model's memory, threads and crashes stay out of the
host. When a worker process dies (killed, out of memory, a crash in native code) the call it
was running raises WorkerCrashed, which the queue treats as a failed attempt to retry, and a
fresh process takes its place; the calls running beside it go on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from multiprocessing.context import SpawnContext, SpawnProcess
from typing import Any, TypeVar

from pebble import ProcessExpired, ProcessPool
from pydantic import Field

log = logging.getLogger(__name__)

Result = TypeVar("Result")

_loaded_model: Any = None  # in a worker process: what the pool's `load` returned


def idle_minutes_setting(also: str = "") -> float:
    """The `idle_minutes` setting of an analyzer's section: one rule, said one way; `also`
    says what else of that analyzer stops by it."""
    return Field(
        10.0,
        ge=0,
        description="Minutes without a track to analyze after which the worker processes stop, "
        "giving the model's memory back; the next track starts them again (a few seconds). "
        f"{also}0: keep them running.",
    )


def idle_seconds(minutes: float) -> float | None:
    """A pool's `idle_seconds` from an `idle_minutes` setting (0: never idle)."""
    return minutes * 60 or None


class WorkerCrashed(RuntimeError):
    """The worker process running an analysis died; the attempt can be retried."""


class WorkersNotStarting(WorkerCrashed):
    """Fresh worker processes stop before they take any work: no retry will do better."""


# read once, when BLAS, OpenMP or torch load; torch and onnxruntime also take the count in code
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_environment_lock = threading.Lock()


class _BudgetedProcess(SpawnProcess):
    """A spawned worker process whose thread budget is in its environment from its first line.

    Setting the variables inside the worker is too late: a spawned child imports the parent's
    main module and unpickles the pool's load function (so the plugin and numpy) before any
    initializer runs, and OpenBLAS sizes its thread pool when it loads. Two workers whose
    BLAS each keep a spinning thread per core fight over the cores (issue 16 measured 2
    workers slower than 1). multiprocessing gives a child the parent's environment and has no
    per-process one, so the variables are set in the parent for the instant of the spawn.
    """

    thread_budget = 1
    environment: Mapping[str, str] = {}  # more variables it must have from its first line

    @staticmethod
    def _Popen(process_obj: _BudgetedProcess):  # noqa: N802 - multiprocessing's hook name
        budget = {variable: str(process_obj.thread_budget) for variable in THREAD_VARIABLES}
        with _environment({**budget, **process_obj.environment}):
            return SpawnProcess._Popen(process_obj)


class _BudgetedSpawnContext(SpawnContext):
    """The spawn start method (a fork would copy the host's threads, event loop and database
    connections), with every process started under `threads`' budget."""

    def __init__(self, threads: int, environment: Mapping[str, str]) -> None:
        super().__init__()
        self.threads = threads
        self.environment = environment

    def Process(self, *args: Any, **kwargs: Any) -> _BudgetedProcess:  # noqa: N802
        process = _BudgetedProcess(*args, **kwargs)
        process.thread_budget = self.threads
        process.environment = self.environment
        return process


@contextmanager
def _environment(variables: dict[str, str]) -> Iterator[None]:
    with _environment_lock:
        saved = {name: os.environ.get(name) for name in variables}
        os.environ.update(variables)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def _start_worker(load: Callable[..., Any], load_args: tuple[Any, ...]) -> None:
    global _loaded_model
    _loaded_model = load(*load_args)


def _run_with_model(task: Callable[..., Result], args: tuple[Any, ...]) -> Result:
    return task(_loaded_model, *args)


class ModelPool:
    """`workers` processes, each holding the model `load(*load_args)` returned, each limited to
    `threads` threads in every thread pool it loads, with `environment` added to its
    environment from its first line (run_in_own_process sets glibc's malloc that way).

    Built on pebble's ProcessPool rather than the standard library's executor: pebble tells a
    crashed worker's own call apart from its neighbours' (the standard pool breaks and fails
    every call in flight), and it stops a worker whose call is cancelled, so a hung read or
    decode can be given a deadline and a stop never waits on it.

    With `idle_seconds`, the processes stop once no call has run for that long, and the next
    call starts fresh ones (pebble starts a pool's processes at its first call): a library
    that is analyzed gives the models' memory back (hundreds of MiB a worker) between bursts.
    """

    def __init__(
        self,
        name: str,
        workers: int,
        load: Callable[..., Any],
        load_args: tuple[Any, ...] = (),
        threads: int = 1,
        doing: str = "analyzing",
        idle_seconds: float | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.workers = workers
        self.doing = doing  # what a crash message says the worker was doing
        self.idle_seconds = idle_seconds
        self._start = (load, load_args)
        self._context = _BudgetedSpawnContext(threads, environment or {})
        self._pool = self._new_pool()
        self._started = False  # pebble starts the processes at a pool's first call
        self._calls = 0  # running or waiting for a worker
        self._idle_timer: asyncio.TimerHandle | None = None
        self._resting: asyncio.Task[None] | None = None

    def _new_pool(self) -> ProcessPool:
        return ProcessPool(
            max_workers=self.workers,
            initializer=_start_worker,
            initargs=self._start,
            context=self._context,
        )

    async def run(self, task: Callable[..., Result], *args: Any) -> Result:
        """Run `task(model, *args)` in a worker process. Cancelling the call stops its process
        (a fresh one takes its place); a process that dies fails its own call only."""
        self._calls += 1
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        try:
            return await self._run(task, args)
        finally:
            self._calls -= 1
            if self._calls == 0 and self.idle_seconds is not None:
                loop = asyncio.get_running_loop()
                self._idle_timer = loop.call_later(self.idle_seconds, self._rest)

    async def _run(self, task: Callable[..., Result], args: tuple[Any, ...]) -> Result:
        try:
            return await self._schedule(task, args)
        except BrokenProcessPool:
            # pebble gives up on a pool whose every worker ended while none was busy (an idle
            # worker killed, say) and fails the calls still waiting; none of them is to blame.
            # A model that cannot load breaks the fresh pool as well, and says so.
            try:
                return await self._schedule(task, args)
            except BrokenProcessPool:
                raise WorkersNotStarting(
                    f"the {self.name} worker processes keep stopping before they take work "
                    "(does the model load? see the log above)"
                ) from None
        except ProcessExpired as error:
            raise WorkerCrashed(
                f"the {self.name} worker process stopped while {self.doing} "
                f"({_exit_reason(error.exitcode)})"
            ) from None

    async def _schedule(self, task: Callable[..., Result], args: tuple[Any, ...]) -> Result:
        if self._resting is not None:  # the old processes finish stopping first
            await asyncio.shield(self._resting)
        pool = self._pool
        if not pool.active:
            log.warning("%s: the worker processes were lost; starting fresh ones", self.name)
            await asyncio.to_thread(_stop, pool)
            self._pool = pool = self._new_pool()
        self._started = True
        return await asyncio.wrap_future(pool.schedule(_run_with_model, (task, args)))

    @property
    def started(self) -> bool:
        """Whether its processes are up (or starting): from a call until they rest or close."""
        return self._started

    async def warm_up(self) -> None:
        """Start the workers and load the model now, so a bad model shows at start-up."""
        await asyncio.gather(*(self.run(_loaded_model_type) for _ in range(self.workers)))

    async def close(self) -> None:
        """Stop every worker process now; calls still running are cancelled."""
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        if self._resting is not None:
            await self._resting
        self._started = False
        await asyncio.to_thread(_stop, self._pool)

    def _rest(self) -> None:
        """Idle for `idle_seconds`: stop the processes; a fresh, unstarted pool takes the
        next call."""
        self._idle_timer = None
        if self._calls or self._resting is not None:
            return
        idle, self._pool = self._pool, self._new_pool()
        self._started = False
        log.info(
            "%s: worker processes stopped after %.0f s without work; the next one starts them",
            self.name,
            self.idle_seconds,
        )
        self._resting = asyncio.create_task(self._stop_idle(idle))

    async def _stop_idle(self, idle: ProcessPool) -> None:
        try:
            await asyncio.to_thread(_stop, idle)
        finally:
            self._resting = None


# glibc's malloc serves a block of 64 KiB or more from a mapping of its own, given back when
# freed, instead of from its heap, which a model trace's many mid-size temporaries fragment:
# CLAP's export peaks at 0.82 GiB every time with it, 0.86 to 1.04 without (bench/RESULTS.md).
# Read by glibc as the process starts; other C libraries ignore it.
ONE_OFF_ENVIRONMENT = {"MALLOC_MMAP_THRESHOLD_": "65536"}


async def run_in_own_process(name: str, step: Callable[..., Result], *args: Any) -> Result:
    """Run a one-off step that needs much memory (a model export) in a process of its own:
    its memory goes back to the system when it ends, and cancelling stops it."""
    pool = ModelPool(
        name,
        1,
        _no_model,
        threads=len(os.sched_getaffinity(0)),
        environment=ONE_OFF_ENVIRONMENT,
    )
    try:
        return await pool.run(_call_without_model, step, args)
    finally:
        await pool.close()


def _no_model() -> None:
    return None


def _call_without_model(model: None, step: Callable[..., Result], args: tuple[Any, ...]) -> Result:
    return step(*args)


def _stop(pool: ProcessPool) -> None:
    pool.stop()
    pool.join()


def _exit_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = ", likely out of memory" if name == "SIGKILL" else ""
        return f"killed by {name}{hint}"
    return f"exit code {exitcode}"


def _loaded_model_type(model: Any) -> str:
    return type(model).__name__
