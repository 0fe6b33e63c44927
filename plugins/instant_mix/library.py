"""Our tracks as the AudioMuse-AI API names them: by title and artist, by words, by artist.
Reads the host's `library_tracks` view (present tracks) and `analysis_states`."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from soundspan_plugins.shared.rows import named_rows

MAX_WORDS = 8
COLUMNS = "t.id, t.path, t.title, t.artist, t.album, t.album_artist"


async def track_by_title_and_artist(engine: AsyncEngine, title: str, artist: str) -> str | None:
    """Our track with this title and artist (case aside); the first by path."""
    async with engine.connect() as connection:
        return (
            await connection.execute(
                text(
                    "SELECT t.id FROM library_tracks t WHERE lower(t.title) = lower(:title)"
                    " AND lower(t.artist) = lower(:artist)"
                    " ORDER BY t.path LIMIT 1"
                ),
                {"title": title, "artist": artist},
            )
        ).scalar()


async def tracks_by_artist(engine: AsyncEngine, artist: str, limit: int) -> list[Any]:
    """Analyzed tracks of one artist (case aside), by path."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                f"SELECT {COLUMNS} FROM library_tracks t WHERE lower(t.artist) = lower(:artist)"
                " AND EXISTS (SELECT 1 FROM analysis_states j"
                " WHERE j.content_id = t.content_id AND j.state = 'done')"
                " ORDER BY t.path LIMIT :limit"
            ),
            {"artist": artist, "limit": limit},
        )
        return named_rows(rows)


async def tracks_matching(engine: AsyncEngine, words: str, limit: int) -> list[Any]:
    """Tracks whose title, artist and album hold every word (case aside), by artist and title."""
    conditions: list[str] = []
    params: dict[str, Any] = {"limit": limit}
    for index, word in enumerate(dict.fromkeys(words.split()[:MAX_WORDS])):
        conditions.append(f"concat_ws(' ', t.title, t.artist, t.album) ILIKE :word{index}")
        escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        params[f"word{index}"] = f"%{escaped}%"
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                f"SELECT {COLUMNS} FROM library_tracks t"
                f" WHERE {' AND '.join(conditions) or 'TRUE'}"
                " ORDER BY t.artist, t.title, t.path LIMIT :limit"
            ),
            params,
        )
        return named_rows(rows)


def song_title(title: str | None, path: str) -> str:
    """A track's title as servers show it: its tag, else its file name."""
    return title or PurePosixPath(path).stem
