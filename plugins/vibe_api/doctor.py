"""The vibe API's check for `soundspan-host doctor`: playlists can be written where they go."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from soundspan_hooks import Check, PluginSettings
from soundspan_plugins.vibe_api.settings import NAME


def doctor_checks(sections: Mapping[str, PluginSettings], music_dir: Path) -> list[Check]:
    folder = music_dir / sections[NAME].playlists_dir
    existing = next(path for path in (folder, *folder.resolve().parents) if path.exists())
    if os.access(existing, os.W_OK | os.X_OK):
        return [Check("playlists", "ok", f"written to {folder.resolve()}")]
    return [
        Check(
            "playlists",
            "warn",
            f"{existing} is read-only: POST /api/playlists cannot write {folder}",
            "mount the music dir writable, or set [vibe_api] playlists_dir to a writable folder",
        )
    ]
