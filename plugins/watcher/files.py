"""What ingest reads from a music file: a content fingerprint, its stat, and its tags."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import mutagen
from mutagen import MutagenError

from soundspan_hooks import TrackFacts

SAMPLE_BYTES = 64 * 1024
SAMPLES = 4  # blocks hashed from a large file: start, end, and evenly between


def fingerprint(path: Path, size: int) -> str:
    """Identity of a file's content: its size and a hash of sampled blocks.

    Sampling keeps a rescan of a NAS cheap (a few reads per file, whatever its length); audio
    files that differ do so in every block, so sampled blocks tell them apart.
    """
    digest = hashlib.blake2b(str(size).encode(), digest_size=16)
    with open(path, "rb") as audio:
        if size <= SAMPLE_BYTES * SAMPLES:
            digest.update(audio.read())
        else:
            step = (size - SAMPLE_BYTES) // (SAMPLES - 1)
            for index in range(SAMPLES):
                audio.seek(index * step)
                digest.update(audio.read(SAMPLE_BYTES))
    return "b2:" + digest.hexdigest()


def read_facts(path: Path) -> TrackFacts:
    """Stat, fingerprint and tags of a file; a file mutagen cannot parse still gets facts."""
    stat = path.stat()
    title = artist = album = None
    duration = None
    try:
        tagged = mutagen.File(path, easy=True)
    except (MutagenError, OSError, ValueError, EOFError):
        tagged = None  # corrupt or not audio: analysis reports it, ingest keeps the file
    if tagged is not None:
        title, artist, album = (_first(tagged, key) for key in ("title", "artist", "album"))
        length = getattr(tagged.info, "length", None)
        duration = float(length) if length else None
    return TrackFacts(
        fingerprint=fingerprint(path, stat.st_size),
        size=stat.st_size,
        mtime=stat.st_mtime,
        title=title,
        artist=artist,
        album=album,
        duration=duration,
    )


def _first(tagged: mutagen.FileType, key: str) -> str | None:
    try:
        values = tagged.get(key)
    except (KeyError, ValueError):
        return None
    if not values:
        return None
    return str(values[0]).replace("\x00", "") or None  # PostgreSQL text holds no NUL


class AudioFiles:
    """Which files under the music dir are music: by extension, outside ignored folders."""

    def __init__(
        self, music_dir: Path, extensions: Iterable[str], ignore: Iterable[str | Path]
    ) -> None:
        self.music_dir = music_dir
        self.extensions = {extension.lower().lstrip(".") for extension in extensions}
        self.ignored = [music_dir / folder for folder in ignore]

    def relative(self, path: str | os.PathLike[str]) -> str | None:
        """The path relative to the music dir if it is a music file we index, else None."""
        path = Path(path)
        if path.suffix.lower().lstrip(".") not in self.extensions or path.name.startswith("."):
            return None
        if any(path.is_relative_to(folder) for folder in self.ignored):
            return None
        try:
            return str(path.relative_to(self.music_dir))
        except ValueError:
            return None

    def walk(self) -> Iterator[tuple[str, int, float]]:
        """Every music file on disk with its size and mtime (a file that vanishes is skipped)."""
        for folder, subfolders, names in os.walk(self.music_dir):
            subfolders[:] = [
                name
                for name in subfolders
                if not name.startswith(".") and Path(folder, name) not in self.ignored
            ]
            for name in names:
                path = Path(folder, name)
                relative = self.relative(path)
                if relative is None:
                    continue
                try:
                    stat = path.stat()
                except OSError:
                    continue
                yield relative, stat.st_size, stat.st_mtime
