"""The [watcher] section: which files are music, how changes are followed (inotify or polls)
and gathered, and what is left alone."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeInt

from soundspan_hooks import PluginSettings

NAME = "watcher"

AUDIO_EXTENSIONS = [
    "mp3", "flac", "ogg", "oga", "opus", "m4a", "mp4", "aac", "alac", "wav", "aif", "aiff",
    "aifc", "wma", "ape", "wv", "mpc", "dsf", "dff",
]  # fmt: skip


class WatcherSettings(PluginSettings):
    extensions: list[str] = Field(AUDIO_EXTENSIONS, description="File extensions that are music.")
    debounce_seconds: float = Field(
        1.0, ge=0, description="Quiet time before a new or rewritten file is read."
    )
    poll_interval: float = Field(
        0.0,
        ge=0,
        description="Seconds between polls of the music dir; 0 uses inotify. Set it for "
        "network shares, where inotify sees nothing.",
    )
    ignore: list[str] = Field(
        [], description="Folders under the music dir to leave alone (e.g. playlists)."
    )
    batch_files: int = Field(
        500,
        ge=1,
        description="Files read and recorded together at most when many arrive at once "
        "(1: one at a time).",
    )
    read_processes: Literal["auto"] | NonNegativeInt = Field(
        "auto",
        description="Processes that read new files (tags, audio identity) beside the host: "
        '"auto" is one fewer than its CPUs, 1 to 2 (past that, the host recording what they '
        "read is the bound); each holds ~90 MiB from the first file it reads. 0 reads in the "
        "host's own threads: no memory added, but reading then competes with the host's event "
        "loop, and a decoder crash stops the host.",
    )
    reconcile_on_start: bool = Field(
        True, description="Compare the disk with the database at start-up."
    )
    follow_symlinks_outside: bool = Field(
        False,
        description="Also index symlinks that point out of the music dir (links inside it "
        "are always followed).",
    )
