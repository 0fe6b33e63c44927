"""Which LMS track is which of ours: by the path in its file:// URL, through the prefix mapping
of plugins/shared/server_paths.py (LMS reports absolute paths as its machine or container sees
them). Pure: no I/O.

LMS writes a file's URL with each byte of its path percent-encoded where a URL needs it
(`file:///music/Bj%C3%B6rk/01%20J%C3%B3ga.flac`); the bytes are decoded as our own file names
are (os.fsdecode), so a name that is not UTF-8 matches ours too.
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

from soundspan_plugins.shared.server_paths import ServerItem

WINDOWS_DRIVE = re.compile(r"^/[A-Za-z]:/")


def file_path(url: Any) -> str | None:
    """The path of a file:// URL; None for any other (a stream, an online service's track)."""
    if not isinstance(url, str) or not url.lower().startswith("file:"):
        return None
    parts = urlsplit(url)
    path = os.fsdecode(unquote_to_bytes(parts.path))
    if parts.netloc and parts.netloc.lower() != "localhost":
        path = f"//{parts.netloc}{path}"  # a share: file://nas/music/...
    elif WINDOWS_DRIVE.match(path):
        path = path[1:]  # file:///C:/Music/... is C:/Music/...
    return path if path.strip("/") else None


class LyrionTitle(ServerItem):
    """A track as `titles ... tags:usa` lists it: LMS's numeric id (as text), the path of its
    url, and its artist (its first one where LMS joins several, "12, 15")."""

    @classmethod
    def from_json(cls, title: dict[str, Any]) -> LyrionTitle:
        ids = [part.strip() for part in str(title.get("artist_id") or "").split(",")]
        name = title.get("artist") if isinstance(title.get("artist"), str) else None
        names = name.split(", ") if name else []
        return cls(
            id=str(title["id"]),
            path=file_path(title.get("url")),
            artist_id=ids[0] or None,
            # several artists: the first name where the names split as the ids do
            artist_name=(names[0] if len(ids) > 1 and len(names) == len(ids) else name) or None,
        )
