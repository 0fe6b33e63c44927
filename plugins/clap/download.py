"""Fetch one file from the Hugging Face hub into a folder of ours: resumable, verified, watched.

huggingface_hub speaks the hub's protocol here (the URL, HF_ENDPOINT, HF_HUB_OFFLINE, the HEAD
that names the file's size and hash, Range requests, retries while the connection drops), but
`hf_hub_download` in huggingface_hub 2.x throws a partial file away when the process ends and
never checks a file's hash. A 700 MB checkpoint must survive a restart and be refused when it is
not the file the hub describes, so the transfer around `http_get` is ours: the bytes go to a
`.part` file named after the hub's hash, a later start appends to it, and the whole file is
checked (size, then sha256 for an LFS file or git's blob sha1 for a small one) before it takes
its final name.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

# what the hub names a file by: an LFS file's sha256, or a small file's git blob sha1
HUB_HASH = re.compile(r"[0-9a-f]{64}|[0-9a-f]{40}")
_RATE_SMOOTHING_SECONDS = 5.0  # the rate shown follows the last few seconds, not the whole run


class DownloadStopped(Exception):
    """The host is stopping; the partial file stays for the next start."""


class CorruptDownload(OSError):
    """The bytes received are not the file the hub describes."""


@dataclass
class DownloadProgress:
    """Bytes of the current file, and of all files of one model, as a status shows them."""

    bytes_done: int = 0
    bytes_total: int | None = None
    bytes_per_second: float = 0.0
    file: str | None = None
    finished_files: int = 0  # bytes of this model's files already complete
    stop: threading.Event = field(default_factory=threading.Event)
    _last: tuple[float, int] | None = None

    def advance(self, done: int) -> None:
        if self.stop.is_set():
            raise DownloadStopped()
        now = time.monotonic()
        if self._last is not None:
            elapsed = now - self._last[0]
            if elapsed > 0:
                weight = min(1.0, elapsed / _RATE_SMOOTHING_SECONDS)
                instant = max(0, done - self._last[1]) / elapsed
                self.bytes_per_second += weight * (instant - self.bytes_per_second)
        self._last = (now, done)
        self.bytes_done = self.finished_files + done

    def file_finished(self, size: int) -> None:
        """The next file's bytes count from its own zero, on top of this one's."""
        self.finished_files += size
        self._last = None

    def as_status(self) -> dict:
        remaining = None if self.bytes_total is None else self.bytes_total - self.bytes_done
        eta = (
            round(remaining / self.bytes_per_second)
            if remaining is not None and self.bytes_per_second > 0
            else None
        )
        return {
            "file": self.file,
            "bytes_done": self.bytes_done,
            "bytes_total": self.bytes_total,
            "bytes_per_second": round(self.bytes_per_second),
            "eta_seconds": eta,
        }


@dataclass(frozen=True)
class HubFile:
    """One file of a hub repository, where it goes, and what the hub says it is."""

    repo: str
    filename: str
    destination: Path
    revision: str | None = None


def remote_size(hub_file: HubFile) -> tuple[int, str, str]:
    """The size, hash (etag) and download URL the hub gives for `hub_file` (one HEAD)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url  # the clap extra's

    endpoint = os.environ.get("HF_ENDPOINT")  # read now, not at import: a setting may change it
    url = hf_hub_url(
        hub_file.repo, hub_file.filename, revision=hub_file.revision, endpoint=endpoint
    )
    metadata = get_hf_file_metadata(url, endpoint=endpoint)
    if metadata.size is None or metadata.etag is None:
        raise CorruptDownload(f"the hub did not give the size and hash of {url}")
    # the etag names the .part file and is the hash the file is checked against: anything
    # but a sha256 or a git sha1 can be neither (and "a/b" would name another folder)
    if not HUB_HASH.fullmatch(metadata.etag):
        raise CorruptDownload(
            f"the hub gave {metadata.etag[:80]!r} as the hash of {url}, which is no sha256 or "
            "sha1; the file cannot be checked, so it is not downloaded"
        )
    return metadata.size, metadata.etag, metadata.location or url


def fetch(hub_file: HubFile, size: int, etag: str, url: str, progress: DownloadProgress) -> Path:
    """Download (or finish downloading) `hub_file`, verify it, and give it its final name."""
    from huggingface_hub.file_download import http_get  # the clap extra's
    from huggingface_hub.utils import build_hf_headers

    destination = hub_file.destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f"{destination.name}.{etag[:16]}.part")
    progress.file = hub_file.filename
    with partial.open("ab") as sink:
        resume = sink.tell()
        if resume > size:  # not a start of this file (a Range past its end is a 416 forever)
            sink.truncate(0)
            resume = 0
        watched = _WatchedFile(sink, progress)
        progress.advance(resume)
        if resume < size:
            http_get(
                url, watched, resume_size=resume, expected_size=size, headers=build_hf_headers()
            )
    try:
        verify(partial, size, etag)
    except CorruptDownload:
        partial.unlink(missing_ok=True)  # a next attempt starts over instead of appending
        raise
    os.replace(partial, destination)
    progress.file_finished(size)
    return destination


def verify(path: Path, size: int, etag: str) -> None:
    """Refuse a file whose size or hash differs from what the hub says (sha256 for an LFS
    file, git's blob sha1 for a small one)."""
    actual = path.stat().st_size
    if actual != size:
        raise CorruptDownload(f"{path.name}: {actual} bytes received, the hub says {size}")
    if len(etag) == 64:
        digest = hashlib.sha256()
    else:
        digest = hashlib.sha1(usedforsecurity=False)
        digest.update(f"blob {size}\0".encode())
    with path.open("rb") as data:
        while block := data.read(1 << 20):
            digest.update(block)
    if digest.hexdigest() != etag:
        raise CorruptDownload(
            f"{path.name}: its hash {digest.hexdigest()} is not the hub's {etag}; the download "
            f"was damaged and is thrown away"
        )


class _WatchedFile:
    """The file `http_get` writes to, reporting each write's position as progress."""

    def __init__(self, sink: BinaryIO, progress: DownloadProgress) -> None:
        self._sink = sink
        self._progress = progress

    def write(self, chunk: bytes) -> int:
        written = self._sink.write(chunk)
        self._progress.advance(self._sink.tell())
        return written

    def tell(self) -> int:
        return self._sink.tell()

    def seek(self, position: int, whence: int = 0) -> int:
        return self._sink.seek(position, whence)

    def truncate(self, size: int | None = None) -> int:
        return self._sink.truncate(size)
