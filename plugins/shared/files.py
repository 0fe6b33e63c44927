"""Files a plugin caches under the data dir, written so a crash never leaves half of one.

Each is written to a temporary file in its own folder, flushed to disk, and renamed into place:
a reader sees the old file or the whole new one. A JSON record beside a cached file says what
it was made from, and each file's size and SHA-256, so a stale, half-written or altered entry
(a tensor zeroed in place keeps its size) is made again.
"""

from __future__ import annotations

import functools
import hashlib
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
    files: Mapping[str, Path],
    build: Callable[[dict], T],
) -> T | None:
    """What `build` makes of a cache entry's JSON record, or None when the entry is absent,
    unreadable or stale: a value in `expected` differs from the record's, or a file in `files`
    is missing or not what the record keeps under that key (file_facts)."""
    try:
        record = json.loads(record_path.read_text())
        if any(record[key] != value for key, value in expected.items()):
            return None
        if any(_facts_differ(record, key, path) for key, path in files.items()):
            return None
        return build(record)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def file_facts(files: Mapping[str, Path]) -> dict[str, object]:
    """What a cache record keeps of each file, under its key: its size, and its SHA-256 under
    `<key>_sha256`; read_cache_record checks both."""
    facts: dict[str, object] = {}
    for key, path in files.items():
        facts[key] = path.stat().st_size
        facts[f"{key}_sha256"] = _sha256(path)
    return facts


def _facts_differ(record: dict, key: str, path: Path) -> bool:
    # the size first: a cheap answer for a truncated file
    return record[key] != path.stat().st_size or record[f"{key}_sha256"] != _sha256(path)


def _sha256(path: Path) -> str:
    # a start reads one file for two records (the fp32 graph is also the int8 record's
    # source): hashed once per version of the file, known by its inode, size and time
    found = path.stat()
    return _sha256_of(str(path), found.st_ino, found.st_size, found.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _sha256_of(path: str, inode: int, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
