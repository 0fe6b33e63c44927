"""Functions the model-pool tests run in worker processes (spawned workers import them).

Like an analyzer plugin's model code, this module imports numpy at its top: a spawned worker
loads OpenBLAS while it unpickles the pool's load function, before any initializer runs.
"""

import os
import signal
import time
from pathlib import Path

import numpy
from threadpoolctl import threadpool_info

LOADS: list[str] = []


def load_model(name: str) -> dict:
    LOADS.append(name)
    return {
        "name": name,
        "loads_in_this_process": len(LOADS),
        "threads": os.environ["OMP_NUM_THREADS"],
    }


def describe(model: dict, suffix: str) -> tuple[int, str, int, str]:
    return os.getpid(), model["name"] + suffix, model["loads_in_this_process"], model["threads"]


def broken_load() -> None:
    raise RuntimeError("weights are corrupt")


def refuse(model: dict, path: str) -> None:
    from soundspan_plugins.shared.audio import UnreadableAudio

    raise UnreadableAudio(path, "the file is empty (0 bytes).")


def thread_pools(model: dict) -> list[tuple[str, int]]:
    """The thread pools this worker has after some BLAS work: (library API, threads)."""
    matrix = numpy.ones((256, 256))
    matrix @ matrix
    return [(pool["user_api"], pool["num_threads"]) for pool in threadpool_info()]


def meet(model: dict, meeting: str, expected: int) -> int:
    """Check in at `meeting` and wait until `expected` workers have: proof that that many
    worker processes run side by side, each busy with one call."""
    folder = Path(meeting)
    (folder / str(os.getpid())).touch()
    deadline = time.monotonic() + 60
    while len(list(folder.iterdir())) < expected:
        assert time.monotonic() < deadline, "the other workers never checked in"
        time.sleep(0.01)
    return os.getpid()


def wait_for_file(model: dict, path: str) -> int:
    """Stay busy until `path` exists; the worker's pid."""
    deadline = time.monotonic() + 60
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)
    return os.getpid()


def die(model: dict) -> None:
    """A crash in native code, as far as the pool can tell."""
    os.kill(os.getpid(), signal.SIGKILL)


def hang_reading(model: dict, fifo: str, pid_file: str) -> None:
    """Block in a read that never ends, as on a stalled network mount: a FIFO nobody writes."""
    with open(pid_file + ".partial", "w") as out:
        out.write(str(os.getpid()))
    os.rename(pid_file + ".partial", pid_file)
    with open(fifo, "rb") as never:
        never.read()


def environment_variable(name: str) -> str | None:
    """A one-off step (run_in_own_process): what its process's environment holds for `name`."""
    return os.environ.get(name)
