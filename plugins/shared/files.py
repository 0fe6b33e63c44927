"""Files a plugin caches under the data dir, written so a crash never leaves half of one.

Each is written to a temporary file in its own folder, flushed to disk, and renamed into place:
a reader sees the old file or the whole new one. A JSON record beside a cached file says what
it was made from and how big it was, so a stale or half-written entry is made again.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def temporary_path(directory: Path, suffix: str) -> Path:
    """An empty file in `directory`, named so a later rename into place is atomic."""
    handle, name = tempfile.mkstemp(dir=directory, prefix=".partial-", suffix=suffix)
    os.close(handle)
    os.chmod(name, 0o644)  # mkstemp's 0600 would hide the cache from other readers
    return Path(name)


def move_into_place(written: Path, final: Path) -> None:
    """Flush a file written under a temporary name to disk, then rename it to `final`."""
    with written.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(written, final)


def write_atomically(path: Path, text: str) -> None:
    temporary = temporary_path(path.parent, path.suffix)
    try:
        with temporary.open("w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def read_cache_record(
    record_path: Path,
    expected: Mapping[str, object],
    sizes: Mapping[str, Path],
    build: Callable[[dict], T],
) -> T | None:
    """What `build` makes of a cache entry's JSON record, or None when the entry is absent,
    unreadable or stale: a value in `expected` differs from the record's, or a file in `sizes`
    is missing or not the size the record keeps under that key."""
    try:
        record = json.loads(record_path.read_text())
        if any(record[key] != value for key, value in expected.items()):
            return None
        if any(record[key] != path.stat().st_size for key, path in sizes.items()):
            return None
        return build(record)
    except (OSError, ValueError, KeyError, TypeError):
        return None
