"""What ingest reads from a music file (identity, stat, tags), and which files it reads."""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import mutagen
from mutagen import MutagenError
from mutagen.easymp4 import EasyMP4Tags

from soundspan_hooks import TRACK_TAG_TYPES, TrackFacts
from soundspan_plugins.watcher.identity import BoundedReader, identity

log = logging.getLogger(__name__)

MUTAGEN_READ_BUDGET_BYTES = 64 * 1024 * 1024  # tags with cover art, never a file without end

# EasyID3 and Vorbis comments know "isrc"; EasyMP4 does not, so name the freeform atom that
# MusicBrainz Picard writes for it
if "isrc" not in EasyMP4Tags.Get:
    EasyMP4Tags.RegisterFreeformKey("isrc", "ISRC")


class NotMusicFile(OSError):
    """An entry ingest refuses to open: not a regular file, or a link out of the music dir."""


def open_regular_file(path: Path) -> BinaryIO:
    """Open `path` for reading only if it is a regular file.

    O_NONBLOCK makes opening a FIFO (or a file swapped for one after a check) return at once
    instead of waiting for a writer; the type is then checked on what was really opened.
    """
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise NotMusicFile(errno.EINVAL, "not a regular file (a FIFO, device or socket)")
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def read_facts(path: Path) -> TrackFacts:
    """Stat, identity and tags of a file; a file mutagen cannot parse still gets facts.

    Every read is bounded: only regular files are opened, and mutagen reads through a budget.
    """
    with open_regular_file(path) as file:
        status = os.fstat(file.fileno())
        try:
            tagged = mutagen.File(
                BoundedReader(file, str(path), MUTAGEN_READ_BUDGET_BYTES), easy=True
            )
        except (MutagenError, OSError, ValueError, EOFError):
            tagged = None  # corrupt or not audio: analysis reports it, ingest keeps the file
        content_id, bytes_id = identity(path, file, status.st_size)
    return TrackFacts(
        fingerprint=content_id,
        bytes_fingerprint=bytes_id,
        size=status.st_size,
        mtime=status.st_mtime,
        **(_tags(tagged) if tagged is not None else {}),
    )


# mutagen's easy keys for the tags not named as TrackFacts names them, the first found wins;
# every other tag is read from the easy key of its own name
EASY_KEYS = {
    "album_artist": ("albumartist",),
    "track_number": ("tracknumber",),
    "disc_number": ("discnumber",),
    "year": ("date", "originaldate"),
    "musicbrainz_recording_id": ("musicbrainz_trackid",),
}


def _tags(tagged: mutagen.FileType) -> dict[str, object]:
    """The tags TrackFacts carries, from mutagen's easy keys (the same names in every format)."""
    found: dict[str, object] = {}
    for tag, kind in TRACK_TAG_TYPES.items():
        if tag == "duration":  # the audio stream's, not a tag
            length = getattr(tagged.info, "length", None)
            found[tag] = float(length) if length else None
            continue
        value = next(
            (value for key in EASY_KEYS.get(tag, (tag,)) if (value := _first(tagged, key))), None
        )
        found[tag] = _read_as(kind, value)
    return found


def _leading_number(value: str | None) -> int | None:
    """The number a tag starts with: "3/12" -> 3, "2001-05-03" -> 2001; None if it has none."""
    match = re.match(r"\s*(\d{1,9})", value or "")
    return int(match.group(1)) if match else None


def _read_as(kind: type, value: str | None) -> object:
    """A tag's text as TrackFacts types it: a number from the number it starts with."""
    if kind is int:
        return _leading_number(value)
    if kind is float:  # "120.5 BPM" -> 120.5
        match = re.match(r"\s*(\d{1,9}(?:\.\d+)?)", value or "")
        return float(match.group(1)) if match else None
    return value


def _first(tagged: mutagen.FileType, key: str) -> str | None:
    try:
        values = tagged.get(key)
    except (KeyError, ValueError):
        return None
    if not values:
        return None
    return str(values[0]).replace("\x00", "") or None  # PostgreSQL text holds no NUL


@dataclass
class Listing:
    """What a walk of the music dir found: music files with (size, mtime), and the paths it
    could not look into. A track under an unreadable path is not gone, only out of sight."""

    files: dict[str, tuple[int, float]] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # not music files: FIFOs, foreign links

    def out_of_sight(self, relative: str) -> bool:
        return any(relative == path or relative.startswith(path + "/") for path in self.unreadable)


class AudioFiles:
    """Which files under the music dir are music: regular files with a music extension, outside
    hidden and ignored folders; a symlink only when it points into the music dir (or anywhere,
    with `follow_symlinks_outside`)."""

    def __init__(
        self,
        music_dir: Path,
        extensions: Iterable[str],
        ignore: Iterable[str | Path],
        follow_symlinks_outside: bool = False,
    ) -> None:
        self.music_dir = music_dir
        self.resolved_music_dir = music_dir.resolve()
        self.extensions = {extension.lower().lstrip(".") for extension in extensions}
        self.ignored = [music_dir / folder for folder in ignore]
        self.follow_symlinks_outside = follow_symlinks_outside

    def relative(self, path: str | os.PathLike[str]) -> str | None:
        """The path relative to the music dir if it is a music file we index, else None."""
        path = Path(path)
        if path.suffix.lower().lstrip(".") not in self.extensions:
            return None
        if any(path.is_relative_to(folder) for folder in self.ignored):
            return None
        try:
            relative = path.relative_to(self.music_dir)
        except ValueError:
            return None
        if any(part.startswith(".") for part in relative.parts):
            return None  # hidden files and folders (.Trash-1000), as the walk skips them
        return str(relative)

    def read(self, relative: str) -> TrackFacts:
        """The facts of a music file; NotMusicFile if it is not one we may read."""
        path = self.music_dir / relative
        if path.is_symlink():
            self._check_link(path)
        return read_facts(path)

    def _check_link(self, path: Path) -> None:
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError) as error:  # dangling, or a loop
            raise NotMusicFile(errno.ENOENT, f"a symlink to nothing readable ({error})") from None
        if not self.follow_symlinks_outside and not target.is_relative_to(self.resolved_music_dir):
            raise NotMusicFile(
                errno.EXDEV,
                f"a symlink out of the music dir (to {target}); "
                "set [watcher] follow_symlinks_outside = true to index such links",
            )

    def walk(self) -> Listing:
        """Every music file on disk with its size and mtime, and what could not be read."""
        listing = Listing()

        def unreadable(error: OSError) -> None:
            if error.filename is None or isinstance(error, FileNotFoundError):
                return  # gone during the walk: its tracks have vanished
            log.warning("cannot read folder %s (%s); its tracks are kept", error.filename, error)
            listing.unreadable.append(os.path.relpath(error.filename, self.music_dir))

        for folder, subfolders, names in os.walk(self.music_dir, onerror=unreadable):
            subfolders[:] = [
                name
                for name in subfolders
                if not name.startswith(".") and Path(folder, name) not in self.ignored
            ]
            for name in names:
                relative = self.relative(Path(folder, name))
                if relative is not None:
                    self._list(relative, listing)
        return listing

    def _list(self, relative: str, listing: Listing) -> None:
        path = self.music_dir / relative
        try:
            if path.is_symlink():
                self._check_link(path)
            status = path.stat()
        except NotMusicFile as refused:
            log.info("skipped %s: %s", relative, refused.strerror)
            listing.skipped.append(relative)
            return
        except FileNotFoundError:
            return  # gone during the walk
        except OSError as error:
            log.warning("cannot read %s (%s); its track is kept", relative, error)
            listing.unreadable.append(relative)
            return
        if stat.S_ISREG(status.st_mode):
            listing.files[relative] = (status.st_size, status.st_mtime)
        else:
            log.info("skipped %s: not a regular file (a FIFO, device or socket)", relative)
            listing.skipped.append(relative)
