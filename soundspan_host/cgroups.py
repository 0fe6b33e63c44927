"""Limits this process's cgroups set (a container's `--cpus`, `--memory`), read from their files.

psutil reads the scheduler affinity and the machine's memory but no cgroup limit, and the PyPI
packages that read cgroups manage or monitor them instead (and are little kept), so the few
lines that find a limit are here: the v2 hierarchy, or v1's controller mount.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePosixPath

LimitReader = Callable[[Path], float | None]


def tightest_limit(
    root: Path, controller: str, read_v2: LimitReader, read_v1: LimitReader
) -> float | None:
    """The smallest limit on this process's cgroup and its ancestors (any of them caps it), read
    by `read_v2` from a v2 cgroup's folder or by `read_v1` from one under the v1 `controller`'s
    mount; None where none is set. `root` is where /proc and /sys are found (a test's folder)."""
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    cgroups = root / "sys/fs/cgroup"
    limits: list[float] = []
    for line in lines:
        if line.count(":") < 2:
            continue
        _, controllers, path = line.split(":", 2)
        if not controllers:  # the v2 hierarchy
            limits += _limits_along(cgroups, path, read_v2)
        elif controller in controllers.split(","):  # v1: mounted as e.g. "cpu,cpuacct" or "cpu"
            mount = cgroups / controllers
            if not mount.is_dir():
                mount = cgroups / controller
            limits += _limits_along(mount, path, read_v1)
    return min(limits, default=None)


def _limits_along(mount: Path, path: str, read: LimitReader) -> list[float]:
    """The limits set on the cgroup at `path` and on each of its ancestors. In a container with
    its own cgroup namespace `path` is "/", the container's own."""
    found = []
    for folder in (PurePosixPath(path), *PurePosixPath(path).parents):
        limit = read(mount / str(folder).lstrip("/"))
        if limit is not None:
            found.append(limit)
    return found


def cgroup_memory_limit(root: Path = Path("/")) -> int | None:
    """The tightest memory limit in bytes (v2 `memory.max`, v1 `memory.limit_in_bytes`)."""
    limit = tightest_limit(root, "memory", _v2_memory, _v1_memory)
    return None if limit is None else int(limit)


def _v2_memory(folder: Path) -> float | None:
    try:
        text = (folder / "memory.max").read_text().strip()
        return None if text == "max" else int(text)
    except (OSError, ValueError):
        return None


# v1 says "no limit" with the largest page-aligned signed 64-bit number
V1_NO_MEMORY_LIMIT = 1 << 62


def _v1_memory(folder: Path) -> float | None:
    try:
        limit = int((folder / "memory.limit_in_bytes").read_text())
    except (OSError, ValueError):
        return None
    return limit if 0 < limit < V1_NO_MEMORY_LIMIT else None
