"""Lists people want to play: nearest tracks walked in order under caps per artist and per
album, with near-duplicate versions of a recording (live, remaster, compilation copy) folded
into the nearest one.

Hand-written: the rules are a few lines of ordering and counting over our own rows, and the
title normalisation is the small, predictable kind a listener can reason about.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MAX_PER_ARTIST = 3
DEFAULT_MAX_PER_ALBUM = 2
CANDIDATES_PER_RESULT = 4  # the first look; a list thinned by caps looks further
MAX_CANDIDATES = 2000

BRACKETED = re.compile(r"[(\[{][^)\]}]*[)\]}]")
# " - Remastered 2011", " - Live at Wembley", " - Radio Edit": a dash suffix naming a version
VERSION_SUFFIX = re.compile(
    r"\s[-\u2013\u2014]\s.*\b(remaster(ed)?|live|version|edit|mix|mono|stereo|demo|acoustic"
    r"|session|take|bonus|single|instrumental|re-?recorded|deluxe)\b.*$"
)
FEATURING = re.compile(r"\s(feat|ft|featuring)\b\.?\s.*$")
NOT_WORD = re.compile(r"[^\w\s]")


def normalised(text: str | None) -> str | None:
    """A title or artist as one recording's name: lowercase, no accents, no bracketed
    suffix ("(Live)", "[Remastered 2011]"), no " - Remaster" and no "feat. X"."""
    if not text:
        return None
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(char for char in decomposed if not unicodedata.combining(char)).casefold()
    stripped = FEATURING.sub("", VERSION_SUFFIX.sub("", BRACKETED.sub(" ", plain)))
    words = " ".join(NOT_WORD.sub(" ", stripped).split())
    return words or " ".join(NOT_WORD.sub(" ", plain).split()) or None  # "(untitled)" stays


def recording_key(track: Any) -> tuple[str, str] | None:
    """Same artist and title: one recording. A track without both never folds."""
    artist, title = normalised(track.artist), normalised(track.title)
    return (artist, title) if artist and title else None


def artist_key(track: Any) -> str | None:
    return normalised(track.artist)


def album_key(track: Any) -> tuple[str, str] | None:
    """An album by its artist (the album artist where tagged), so that two artists'
    "Greatest Hits" stay two albums."""
    album = normalised(track.album)
    if album is None:
        return None
    return (normalised(track.album_artist) or normalised(track.artist) or "", album)


@dataclass(frozen=True)
class Caps:
    per_artist: int = DEFAULT_MAX_PER_ARTIST
    per_album: int = DEFAULT_MAX_PER_ALBUM

    @classmethod
    def asked(cls, per_artist: int | None, per_album: int | None) -> Caps:
        """The caps a request asks for; 0 or none is the default."""
        return cls(per_artist or DEFAULT_MAX_PER_ARTIST, per_album or DEFAULT_MAX_PER_ALBUM)


@dataclass
class Chosen:
    content_id: str
    track: Any
    value: float  # a distance or a score, as the candidates carried it
    versions: list[Any] = field(default_factory=list)  # tracks folded into this one


class Shaper:
    """What a list holds so far: tracks per artist and album, and each recording kept.

    Seeds (the query's own tracks) count towards the caps, and their versions fold away.
    """

    def __init__(self, caps: Caps, seeds: Iterable[Any] = ()) -> None:
        self.caps = caps
        self.artists: Counter[str] = Counter()
        self.albums: Counter[tuple[str, str]] = Counter()
        self.recordings: dict[tuple[str, str], Chosen | None] = {}
        for seed in seeds:
            self.count(seed, None)

    def folds(self, track: Any) -> bool:
        """Whether the track is a version of one already kept (it is then listed under it)."""
        key = recording_key(track)
        if key is None or key not in self.recordings:
            return False
        kept = self.recordings[key]
        if kept is not None and kept.track.id != track.id:
            kept.versions.append(track)
        return True

    def within_caps(self, track: Any) -> bool:
        artist, album = artist_key(track), album_key(track)
        return (artist is None or self.artists[artist] < self.caps.per_artist) and (
            album is None or self.albums[album] < self.caps.per_album
        )

    def count(self, track: Any, chosen: Chosen | None) -> None:
        if (artist := artist_key(track)) is not None:
            self.artists[artist] += 1
        if (album := album_key(track)) is not None:
            self.albums[album] += 1
        if (recording := recording_key(track)) is not None:
            self.recordings.setdefault(recording, chosen)


def shape(
    candidates: Iterable[tuple[str, float]],
    tracks: dict[str, Any],
    caps: Caps,
    seeds: Iterable[Any],
    limit: int,
) -> list[Chosen]:
    """The first `limit` candidates (nearest first) within the caps, versions folded; the
    rest of the candidates are still walked to list their versions."""
    shaper = Shaper(caps, seeds)
    chosen: list[Chosen] = []
    for content, value in candidates:
        track = tracks.get(content)
        if track is None or shaper.folds(track):
            continue
        if len(chosen) < limit and shaper.within_caps(track):
            kept = Chosen(content, track, value)
            chosen.append(kept)
            shaper.count(track, kept)
    return chosen


async def shaped_nearest(
    fetch: Callable[[int], Awaitable[list[tuple[str, float]]]],
    tracks_of: Callable[[list[str]], Awaitable[dict[str, Any]]],
    caps: Caps,
    seeds: Iterable[Any],
    limit: int,
    first_look: int | None = None,
) -> list[Chosen]:
    """`limit` results from `fetch(count)` (the `count` nearest candidates), looking further
    while caps and folding leave the list short and more candidates exist. `first_look`: the
    candidates fetched first (default 4 a result; fewer where caps seldom bite, for speed)."""
    seeds = list(seeds)
    tracks: dict[str, Any] = {}
    count = first_look or limit * CANDIDATES_PER_RESULT
    while True:
        candidates = await fetch(count)
        unseen = [content for content, _ in candidates if content not in tracks]
        tracks.update(await tracks_of(unseen))
        chosen = shape(candidates, tracks, caps, seeds, limit)
        if len(chosen) >= limit or len(candidates) < count or count >= MAX_CANDIDATES:
            return chosen
        count = min(count * CANDIDATES_PER_RESULT, MAX_CANDIDATES)
