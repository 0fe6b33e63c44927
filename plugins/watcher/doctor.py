"""The watcher's check for `soundspan-host doctor`: inotify can watch every folder."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from soundspan_hooks import Check, PluginSettings
from soundspan_plugins.watcher.settings import NAME

INOTIFY_WATCHES = Path("/proc/sys/fs/inotify/max_user_watches")


def inotify_checks(sections: Mapping[str, PluginSettings], music_dir: Path) -> list[Check]:
    """inotify needs one watch per folder; a big library can pass the system's limit."""
    if sections[NAME].poll_interval > 0 or not music_dir.is_dir():
        return []
    try:
        limit = int(INOTIFY_WATCHES.read_text())
    except OSError:
        return []
    folders = sum(1 for _ in os.walk(music_dir))
    if folders > limit * 0.9:
        return [
            Check(
                "inotify",
                "warn",
                f"{folders} folders to watch; the system allows {limit} inotify watches",
                "raise fs.inotify.max_user_watches (sysctl), or set [watcher] poll_interval",
            )
        ]
    return [Check("inotify", "ok", f"{folders} folders to watch of {limit} allowed")]
