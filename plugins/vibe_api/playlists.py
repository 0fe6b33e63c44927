"""Extended M3U playlists written into the music dir, where Navidrome and Jellyfin import
them by themselves. Names are checked, writes are atomic, nothing lands outside the folder."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

UNSAFE_NAME = re.compile(r"[/\\\x00-\x1f\x7f]")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
EXTENSION = ".m3u"


class PlaylistRefused(ValueError):
    """The name or the folder cannot hold this playlist."""


def playlist_file(folder: Path, name: str) -> Path:
    """The file for a playlist called `name` in `folder`; refuses names that are paths."""
    if (
        name != name.strip()
        or not name
        or name.startswith(".")
        or UNSAFE_NAME.search(name)
        or len(os.fsencode(name + EXTENSION)) > 255  # the longest file name Linux allows
    ):
        raise PlaylistRefused(
            f"playlist name {name[:120]!r} refused: use a plain file name without slashes,"
            " control characters or a leading dot"
        )
    target = folder / f"{name}{EXTENSION}"
    if target.resolve().parent != folder.resolve():
        raise PlaylistRefused(f"playlist name {name[:120]!r} refused: it leaves the folder")
    return target


def write_playlist(
    folder: Path, name: str, music_dir: Path, tracks: list[Any], overwrite: bool
) -> Path:
    """Write `tracks` (rows with raw_path, title, artist, duration) as NAME.m3u in `folder`.

    Paths are relative to the playlist's folder and keep the exact bytes of each file name.
    """
    folder.mkdir(parents=True, exist_ok=True)
    target = playlist_file(folder, name)
    if target.exists() and not overwrite:
        raise FileExistsError(f"playlist {name!r} exists; send overwrite: true to replace it")
    lines = [b"#EXTM3U"]
    for track in tracks:
        location = os.path.join(os.fsencode(music_dir), track.raw_path)
        lines.append(_extinf(track).encode())
        lines.append(os.path.relpath(location, os.fsencode(folder)))
    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=".", suffix=EXTENSION)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(b"\n".join(lines) + b"\n")
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def _extinf(track: Any) -> str:
    seconds = round(track.duration) if track.duration else -1
    title = track.title or Path(track.path).stem
    shown = f"{track.artist} - {title}" if track.artist else title
    return f"#EXTINF:{seconds},{CONTROL.sub(' ', shown)}"
