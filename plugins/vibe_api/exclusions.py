"""Rules every list obeys: tracks left out of similar, search, path, mix, the map and
playlists (and so of what other plugins get through vibe_api's hooks) by path glob, genre or
duration.

The rules are SQL conditions added where candidates are read, so an HNSW iterative scan keeps
walking the graph until enough kept tracks are found. Tracks a request names itself (the track
asked "similar to", a path's ends, a mix's items, a playlist's track ids) are never filtered.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from soundspan_plugins.vibe_api.queries import vector_literal


def glob_regex(glob: str) -> str:
    """A path glob as a regular expression in the dialect PostgreSQL's `~` and Python's `re`
    share, matching a whole library-relative path: `*` any characters but `/`, `?` one of them,
    `[abc]`/`[!abc]` a class, `**/` any folders (none too), `**` anything below; `\\` or a
    class (`[[]`) takes the next character as itself.

    Hand-written: fnmatch has no `**`, and the libraries that have it emit Python-only regex
    syntax that PostgreSQL refuses (wcmatch a scoped `(?s:`, pathspec named groups, and
    gitignore's rules, where `*.m4b` matches in every folder).
    """
    parts, index = [], 0
    while index < len(glob):
        if glob.startswith("**/", index):
            parts.append("(?:.*/)?")
            index += 3
        elif glob.startswith("**", index):
            parts.append(".*")
            index += 2
        elif glob[index] == "*":
            parts.append("[^/]*")
            index += 1
        elif glob[index] == "?":
            parts.append("[^/]")
            index += 1
        elif glob[index] == "\\" and index + 1 < len(glob):  # \[ is a bracket itself
            parts.append(re.escape(glob[index + 1]))
            index += 2
        elif glob[index] == "[" and (close := _class_end(glob, index)) is not None:
            parts.append(_class(glob[index + 1 : close]))
            index = close + 1
        else:
            parts.append(re.escape(glob[index]))
            index += 1
    return "".join(parts)


def _class_end(glob: str, start: int) -> int | None:
    """Where the class opened at `start` closes; a `]` right after `[` or `[!` is a member."""
    index = start + 1
    if index < len(glob) and glob[index] in "!^":
        index += 1
    if index < len(glob) and glob[index] == "]":
        index += 1
    close = glob.find("]", index)
    return close if close != -1 else None


def _class(members: str) -> str:
    negated = members[:1] in ("!", "^")
    escaped = re.sub(r"([\\\[\]^])", r"\\\1", members[1:] if negated else members)
    return f"[^/{escaped}]" if negated else f"[{escaped}]"  # a class never matches a `/`


@dataclass(frozen=True)
class Exclusions:
    """The `[vibe_api] exclude_*` settings in force, as SQL."""

    paths: tuple[str, ...] = ()
    genres: tuple[str, ...] = ()
    shorter_than_seconds: float | None = None
    longer_than_seconds: float | None = None

    def settings(self) -> dict[str, Any]:
        """The rules in force, by their setting's name."""
        every = {
            "exclude_paths": list(self.paths),
            "exclude_genres": list(self.genres),
            "exclude_shorter_than_seconds": self.shorter_than_seconds,
            "exclude_longer_than_seconds": self.longer_than_seconds,
        }
        return {name: value for name, value in every.items() if value}

    def conditions(self, alias: str = "t") -> dict[str, str]:
        """Per rule in force, the SQL condition true for a track of `alias` it excludes. A
        genre tag holding several (`Audiobook; Fiction`) is excluded by any of them; a track of
        unknown genre or duration is kept."""
        found = {}
        if self.paths:
            found["exclude_paths"] = f"{alias}.path ~ :exclude_paths"
        if self.genres:
            found["exclude_genres"] = (
                f"EXISTS (SELECT 1 FROM unnest(string_to_array({alias}.genre, ';')) AS g(genre)"
                " WHERE lower(btrim(g.genre)) = ANY(:exclude_genres))"
            )
        if self.shorter_than_seconds:
            found["exclude_shorter_than_seconds"] = (
                f"coalesce({alias}.duration < :exclude_shorter_than, false)"
            )
        if self.longer_than_seconds:
            found["exclude_longer_than_seconds"] = (
                f"coalesce({alias}.duration > :exclude_longer_than, false)"
            )
        return found

    def keeps(self, alias: str = "t") -> str:
        """SQL true for a track of `alias` that no rule excludes (each condition is true or
        false, never null, so the NOT keeps an unknown duration)."""
        conditions = self.conditions(alias)
        return f"NOT ({' OR '.join(conditions.values())})" if conditions else "TRUE"

    @property
    def params(self) -> dict[str, Any]:
        """The values the conditions bind."""
        return {
            "exclude_paths": "^(?:" + "|".join(map(glob_regex, self.paths)) + ")$",
            "exclude_genres": [genre.lower() for genre in self.genres],  # as SQL lower()
            "exclude_shorter_than": self.shorter_than_seconds,
            "exclude_longer_than": self.longer_than_seconds,
        }


NOTHING_EXCLUDED = Exclusions()


def _counted(exclusions: Exclusions, row: Any) -> dict[str, Any]:
    rules = {name: getattr(row, name) for name in exclusions.conditions() if getattr(row, name)}
    return {"tracks": row.tracks, "rules": rules}


def _counts_sql(exclusions: Exclusions) -> str:
    return ", ".join(
        [
            "count(DISTINCT t.id) AS tracks",
            *(
                f"count(DISTINCT t.id) FILTER (WHERE {condition}) AS {name}"
                for name, condition in exclusions.conditions().items()
            ),
        ]
    )


async def library_excluded(engine: AsyncEngine, exclusions: Exclusions) -> dict[str, Any]:
    """The rules in force and how many present tracks they exclude, in all and by rule."""
    answer: dict[str, Any] = {"settings": exclusions.settings(), "tracks": 0, "rules": {}}
    if not exclusions.conditions():
        return answer
    return answer | _counted(exclusions, await _excluded_counts(engine, exclusions))


async def excluded_near(
    engine: AsyncEngine,
    table: str,
    exclusions: Exclusions,
    points: Sequence[tuple[Iterable[float], float]],
    own_contents: Iterable[str],
) -> dict[str, Any] | None:
    """The analyzed tracks the rules left out of a list: those within each point's radius
    (a query vector, and the distance of the farthest result taken for it), the query's own
    tracks aside; None when there are none."""
    if not exclusions.conditions() or not points:
        return None
    row = await _excluded_counts(
        engine,
        exclusions,
        " AND e.content_id <> ALL(:own)"
        " AND EXISTS (SELECT 1 FROM unnest(CAST(:points AS text[]),"
        " CAST(:radii AS float8[])) AS w(point, radius)"
        " WHERE e.embedding <=> CAST(w.point AS vector) <= w.radius)",
        own=list(own_contents),
        points=[vector_literal(point) for point, _ in points],
        radii=[float(radius) + 1e-6 for _, radius in points],
        joined=f" JOIN {table} e ON e.content_id = t.content_id",
    )
    return _counted(exclusions, row) if row.tracks else None


async def excluded_among(
    engine: AsyncEngine, exclusions: Exclusions, content_ids: Iterable[str]
) -> dict[str, Any] | None:
    """The present tracks of these contents (candidates ranked above a list's last result)
    that the rules left out; None when there are none."""
    content_ids = list(content_ids)
    if not exclusions.conditions() or not content_ids:
        return None
    row = await _excluded_counts(
        engine, exclusions, " AND t.content_id = ANY(:contents)", contents=content_ids
    )
    return _counted(exclusions, row) if row.tracks else None


async def _excluded_counts(
    engine: AsyncEngine,
    exclusions: Exclusions,
    narrowed: str = "",
    joined: str = "",
    **params: Any,
) -> Any:
    """One row: the present tracks (library_tracks t, `joined` to more) the rules exclude,
    in all and by rule, `narrowed` by a further condition."""
    async with engine.connect() as connection:
        return (
            await connection.execute(
                text(
                    f"SELECT {_counts_sql(exclusions)} FROM library_tracks t{joined}"
                    f" WHERE NOT ({exclusions.keeps()}){narrowed}"
                ),
                {**exclusions.params, **params},
            )
        ).one()
