"""Extended M3U playlists written into the music dir, where Navidrome and Jellyfin import
them by themselves. Names are checked, writes are atomic, nothing lands outside the folder,
and the folder itself stays in the music dir."""

from __future__ import annotations

import errno
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

UNSAFE_NAME = re.compile(r"[/\\\x00-\x1f\x7f]")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
LINE_BREAK = re.compile(rb"[\r\n]")
EXTENSION = ".m3u"
SETTING = "[vibe_api] playlists_dir (SOUNDSPAN_VIBE_API__PLAYLISTS_DIR)"
NO_HARD_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK})


class PlaylistRefused(ValueError):
    """The name or the tracks cannot make this playlist."""


class PlaylistFolderRefused(RuntimeError):
    """The configured playlists folder is not safe to write into."""


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


@dataclass(frozen=True)
class WrittenPlaylist:
    file: Path
    tracks: int
    left_out: list[str]  # library paths no M3U line can hold


def playlists_folder(music_dir: Path, configured: Path) -> Path:
    """The folder playlists go to; one under the music dir must stay there once resolved.

    Anyone who can write into the library could otherwise make `Playlists` a link to a
    folder of the host's (~/.ssh, say) and have playlists written there.
    """
    folder = music_dir / configured
    resolved = folder.resolve()
    if configured.is_absolute():
        if folder.is_symlink():
            raise PlaylistFolderRefused(
                f"the playlists folder {folder} is a symbolic link; point {SETTING} at the "
                "folder it links to"
            )
        return folder
    if not resolved.is_relative_to(music_dir.resolve()):
        raise PlaylistFolderRefused(
            f"the playlists folder {folder} leads outside the music dir (to {resolved}), "
            f"through a symbolic link or `..`; remove the link, or set {SETTING} to an "
            "absolute path"
        )
    return resolved


def write_playlist(
    folder: Path, name: str, music_dir: Path, tracks: list[Any], overwrite: bool
) -> WrittenPlaylist:
    """Write `tracks` (rows with raw_path, title, artist, duration) as NAME.m3u in `folder`.

    Paths are relative to the playlist's folder and keep the exact bytes of each file name;
    a path with a line break, which would split into two M3U lines, is left out. Without
    `overwrite`, an existing playlist is never replaced, even by a request racing this one.
    """
    folder.mkdir(parents=True, exist_ok=True)
    target = playlist_file(folder, name)
    lines = [b"#EXTM3U"]
    left_out = []
    for track in tracks:
        location = os.path.relpath(
            os.path.join(os.fsencode(music_dir), track.raw_path), os.fsencode(folder)
        )
        if LINE_BREAK.search(location):
            left_out.append(track.path)
            continue
        lines.append(_extinf(track).encode())
        # a line starting with # is a comment (possible when the folder is the music dir)
        lines.append(b"./" + location if location.startswith(b"#") else location)
    if len(lines) == 1:
        raise PlaylistRefused(
            "none of the playlist's tracks can be written as an M3U line: their file names "
            "hold line breaks"
        )
    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=".", suffix=EXTENSION)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(b"\n".join(lines) + b"\n")
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)
        if overwrite:
            os.replace(temporary, target)
        else:
            _create_only(Path(temporary), target, name)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return WrittenPlaylist(target, len(lines) // 2, left_out)


def _create_only(written: Path, target: Path, name: str) -> None:
    """Give `written` the name `target` only if nothing has it: atomic, unlike exists()."""
    try:
        os.link(written, target, follow_symlinks=False)
    except FileExistsError:
        raise FileExistsError(
            f"playlist {name!r} exists; send overwrite: true to replace it"
        ) from None
    except OSError as error:
        if error.errno not in NO_HARD_LINKS:
            raise
        # some network shares have no hard links: claim the name, then fill it in one step
        try:
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW))
        except FileExistsError:
            raise FileExistsError(
                f"playlist {name!r} exists; send overwrite: true to replace it"
            ) from None
        os.replace(written, target)


def _extinf(track: Any) -> str:
    seconds = round(track.duration) if track.duration else -1
    title = track.title or Path(track.path).stem
    shown = f"{track.artist} - {title}" if track.artist else title
    return f"#EXTINF:{seconds},{CONTROL.sub(' ', shown)}"
