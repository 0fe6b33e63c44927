"""Extended M3U playlists written into the music dir, where Navidrome and Jellyfin import
them by themselves. Names are checked, writes are atomic, nothing lands outside the folder,
and the folder itself stays in the music dir."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from soundspan_plugins.shared.playlist_names import checked_playlist_name

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
    try:
        checked_playlist_name(name)
    except ValueError as error:
        raise PlaylistRefused(str(error)) from None
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
    """The folder playlists go to, resolved; one under the music dir must stay there.

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
        return resolved
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
    """Write `tracks` (rows with raw_path, title, artist, duration) as NAME.m3u in `folder`
    (as playlists_folder gave it).

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
    directory = _open_checked_folder(folder)
    temporary = f".{secrets.token_hex(8)}{EXTENSION}"
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with os.fdopen(os.open(temporary, flags, 0o644, dir_fd=directory), "wb") as file:
            file.write(b"\n".join(lines) + b"\n")
            file.flush()
            os.fchmod(file.fileno(), 0o644)  # the umask may have narrowed it
            os.fsync(file.fileno())
        if overwrite:
            os.replace(temporary, target.name, src_dir_fd=directory, dst_dir_fd=directory)
        else:
            _create_only(directory, temporary, target.name, name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary, dir_fd=directory)
        os.close(directory)
    return WrittenPlaylist(target, len(lines) // 2, left_out)


def _open_checked_folder(folder: Path) -> int:
    """A descriptor of `folder` that every write goes through, once it is known to be that
    folder: a folder (or a folder above it) swapped for a symbolic link after it was checked
    would otherwise have the host write `*.m3u` wherever the link points."""
    try:
        directory = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:  # ELOOP: it is a link now
        raise PlaylistFolderRefused(
            f"the playlists folder {folder} cannot be opened as a folder ({error.strerror})"
        ) from None
    try:
        opened = os.readlink(f"/proc/self/fd/{directory}")  # where it really is (Linux)
    except OSError:
        opened = None
    found, expected = os.fstat(directory), os.stat(folder)
    same = (found.st_dev, found.st_ino) == (expected.st_dev, expected.st_ino)
    if (opened is not None and opened != str(folder)) or not same:
        os.close(directory)
        raise PlaylistFolderRefused(
            f"the playlists folder {folder} changed while it was written to (a folder on "
            "its way became a symbolic link?); nothing was written"
        )
    return directory


def _create_only(directory: int, written: str, target: str, name: str) -> None:
    """Give `written` the name `target` in `directory` only if nothing has it: atomic."""
    in_folder = {"src_dir_fd": directory, "dst_dir_fd": directory}
    try:
        os.link(written, target, follow_symlinks=False, **in_folder)
    except FileExistsError:
        raise FileExistsError(
            f"playlist {name!r} exists; send overwrite: true to replace it"
        ) from None
    except OSError as error:
        if error.errno not in NO_HARD_LINKS:
            raise
        # some network shares have no hard links: claim the name, then fill it in one step
        try:
            claim = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            os.close(os.open(target, claim, dir_fd=directory))
        except FileExistsError:
            raise FileExistsError(
                f"playlist {name!r} exists; send overwrite: true to replace it"
            ) from None
        os.replace(written, target, **in_folder)


def _extinf(track: Any) -> str:
    seconds = round(track.duration) if track.duration else -1
    title = track.title or Path(track.path).stem
    shown = f"{track.artist} - {title}" if track.artist else title
    return f"#EXTINF:{seconds},{CONTROL.sub(' ', shown)}"
