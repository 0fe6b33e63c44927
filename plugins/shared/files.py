"""Files a plugin caches under the data dir, written so a crash never leaves half of one.

Each is written to a temporary file in its own folder, flushed to disk, and renamed into place:
a reader sees the old file or the whole new one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def temporary_path(directory: Path, suffix: str) -> Path:
    """An empty file in `directory`, named so a later rename into place is atomic."""
    handle, name = tempfile.mkstemp(dir=directory, prefix=".partial-", suffix=suffix)
    os.close(handle)
    os.chmod(name, 0o644)  # mkstemp's 0600 would hide the cache from other readers
    return Path(name)


def fsync_file(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


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
