"""Shaping benchmark (issue 25): `shape()` over the Instant Mix's first look, in one process.

A Navidrome Instant Mix of 200 songs looks at 277 candidates (a tenth more for songs the server
lacks, a quarter more for the caps) and walks them under the caps with versions folded: every
candidate's artist, title and album normalised. This times that walk alone, on 277 SQLAlchemy
rows shaped like the vibe API's (1,000 artists, 5,000 albums, unique titles): the same list
again and again (names remembered), and a new list each time (titles never seen before); then
the same lists with the rows made named tuples as the vibe API's queries now return them
(plugins/shared/rows.py), and what making them costs.

Side by side with an older commit: check it out in a worktree and put a folder of links on
PYTHONPATH (soundspan_plugins -> its plugins/, soundspan_hooks -> its hooks/,
soundspan_host -> its soundspan_host/), then run this file from outside the repository:

    cd /tmp && /work/main/.venv/bin/python /work/main/bench/shaping.py
    cd /tmp && PYTHONPATH=/tmp/before-links /work/main/.venv/bin/python /work/main/bench/shaping.py
"""

from __future__ import annotations

import random
import time

from sqlalchemy.engine.result import IteratorResult, SimpleResultMetaData
from sqlalchemy.engine.row import Row

from soundspan_plugins.shared.rows import named_rows
from soundspan_plugins.vibe_api import shaping
from soundspan_plugins.vibe_api.shaping import Caps, shape

CANDIDATES, LIMIT = 277, 221  # the first look and the list of an Instant Mix of 200
COLUMNS = ("id", "path", "content_id", "title", "artist", "album", "album_artist", "genre")
META = SimpleResultMetaData(COLUMNS)
rng = random.Random(1)


def row(number: int) -> Row:
    values = (
        f"t{number}", f"p/{number}", f"c{number}", f"Title {number} (Live)",
        f"Artist {rng.randrange(1000)}", f"Album {rng.randrange(5000)}", None, "rock",
    )  # fmt: skip
    return Row(META, None, META._key_to_index, values)


def a_list(first: int) -> tuple[dict, list]:
    rows = [row(first + offset) for offset in range(CANDIDATES)]
    return {one.content_id: one for one in rows}, [(one.content_id, 0.1) for one in rows]


def named(lists: list[tuple[dict, list]]) -> list[tuple[dict, list]]:
    return [
        (
            {
                one.content_id: one
                for one in named_rows(IteratorResult(META, iter(tracks.values())))
            },
            candidates,
        )
        for tracks, candidates in lists
    ]


def making_ms(lists: list[tuple[dict, list]]) -> float:
    times = []
    for tracks, _ in lists:
        started = time.perf_counter()
        named_rows(IteratorResult(META, iter(tracks.values())))
        times.append(time.perf_counter() - started)
    return 1000 * sorted(times)[len(times) // 2]


def p50_ms(lists: list[tuple[dict, list]], seed: Row) -> float:
    times = []
    for tracks, candidates in lists:
        started = time.perf_counter()
        shape(candidates, tracks, Caps(3, 2), [seed], LIMIT)
        times.append(time.perf_counter() - started)
    return 1000 * sorted(times)[len(times) // 2]


def main() -> None:
    seed = row(10**9)
    same = [a_list(0)] * 300
    new = [a_list(1000 * number) for number in range(1, 150)]
    print(f"== shape() of {CANDIDATES} candidates to {LIMIT}: {shaping.__file__}")
    print(f"  the same list again: p50 {p50_ms(same, seed):.2f} ms")
    print(f"  a new list each time (new titles): p50 {p50_ms(new, seed):.2f} ms")
    print(f"  named tuples, the same list again: p50 {p50_ms(named(same), seed):.2f} ms")
    unseen = named([a_list(1000 * number) for number in range(150, 300)])  # titles never seen
    print(f"  named tuples, a new list each time: p50 {p50_ms(unseen, seed):.2f} ms")
    print(f"  making {CANDIDATES} rows named tuples: p50 {making_ms(new):.2f} ms")


if __name__ == "__main__":
    main()
