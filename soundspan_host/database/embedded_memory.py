"""How much memory the embedded PostgreSQL keeps for its own page cache (`shared_buffers`).

PostgreSQL's default, 128 MB, holds a few thousand tracks' vectors: past that every similar
search copies its graph and rows in from the kernel's cache again (at 100,000 tracks an Instant
Mix of 200 read ~800 of its ~4,100 pages that way, and PostgreSQL spent 12 ms instead of 8 on
it; bench/RESULTS.md). `auto` keeps an eighth of the memory this process may use (its cgroup's
limit in a container, else the machine's), between that default and 2 GB: the host's own
processes need the rest, and pages count only once a search has read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psutil

from soundspan_host.cgroups import cgroup_memory_limit

AUTO_SHARE = 8  # an eighth of the memory
AUTO_MIN_MB = 128  # PostgreSQL's own default
AUTO_MAX_MB = 2048
MB = 1 << 20


@dataclass(frozen=True)
class SharedBuffers:
    megabytes: int
    why: str  # for the log: how the size was chosen

    @property
    def setting(self) -> str:
        return f"{self.megabytes}MB"


def usable_memory(root: Path = Path("/")) -> int:
    """Bytes this process may use: the machine's, bounded by its cgroups' memory limit."""
    limit = cgroup_memory_limit(root)
    total = psutil.virtual_memory().total
    return total if limit is None else min(total, limit)


def size_shared_buffers(setting: Literal["auto"] | int, memory: int | None = None) -> SharedBuffers:
    """The size `setting` asks for: a number of megabytes as it is, `auto` from `memory` (by
    default usable_memory())."""
    if setting != "auto":
        return SharedBuffers(setting, "set: embedded_database_shared_buffers_mb")
    memory = usable_memory() if memory is None else memory
    megabytes = min(max(memory // AUTO_SHARE // MB, AUTO_MIN_MB), AUTO_MAX_MB)
    gib = memory / (1 << 30)
    return SharedBuffers(megabytes, f"auto: an eighth of {gib:.1f} GiB, 128 MB to 2 GB")
