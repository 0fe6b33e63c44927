"""Lists people want to play: nearest tracks walked in order under caps per artist and per
album, with near-duplicate versions of a recording (live, remaster, compilation copy) folded
into the nearest one.

Hand-written: the rules are a few lines of ordering and counting over our own rows, and the
title normalisation is the small, predictable kind a listener can reason about.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

DEFAULT_MAX_PER_ARTIST = 3
DEFAULT_MAX_PER_ALBUM = 2
CANDIDATES_PER_RESULT = 4  # the first look; a list thinned by caps looks further
MAX_CANDIDATES = 2000
NAMES_REMEMBERED = 50_000  # normalised names kept (a few MB)

BRACKETED = re.compile(r"[(\[{][^)\]}]*[)\]}]")
# " - Remastered 2011", " - Live at Wembley", " - Radio Edit": a dash suffix naming a version
VERSION_SUFFIX = re.compile(
    r"\s[-\u2013\u2014]\s.*\b(remaster(ed)?|live|version|edit|mix|mono|stereo|demo|acoustic"
    r"|session|take|bonus|single|instrumental|re-?recorded|deluxe)\b.*$"
)
FEATURING = re.compile(r"\s(feat|ft|featuring)\b\.?\s.*$")
NOT_WORD = re.compile(r"[^\w\s]")


@functools.lru_cache(maxsize=NAMES_REMEMBERED)
def normalised(text: str | None) -> str | None:
    """A title or artist as one recording's name: lowercase, no accents, no bracketed
    suffix ("(Live)", "[Remastered 2011]"), no " - Remaster" and no "feat. X".

    Remembered: a list of 200 walks some 300 candidates whose artists repeat, and each
    request's artists and albums are the next one's too."""
    if not text:
        return None
    plain = (text if text.isascii() else _without_accents(text)).casefold()
    stripped = FEATURING.sub("", VERSION_SUFFIX.sub("", BRACKETED.sub(" ", plain)))
    words = " ".join(NOT_WORD.sub(" ", stripped).split())
    return words or " ".join(NOT_WORD.sub(" ", plain).split()) or None  # "(untitled)" stays


def _without_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(char for char in decomposed if not unicodedata.combining(char))


class TrackKeys(NamedTuple):
    """What the rules compare of a track, normalised once."""

    artist: str | None
    recording: tuple[str, str] | None  # same artist and title: one recording
    album: tuple[str, str] | None  # by its album artist, so two "Greatest Hits" stay two


def keys_of(track: Any) -> TrackKeys:
    """A track without both artist and title never folds."""
    artist, title, album = (
        normalised(track.artist),
        normalised(track.title),
        normalised(track.album),
    )
    album_by = normalised(track.album_artist) or artist or ""
    return TrackKeys(
        artist,
        (artist, title) if artist and title else None,
        (album_by, album) if album is not None else None,
    )


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
        self.artists: dict[str, int] = {}
        self.albums: dict[tuple[str, str], int] = {}
        self.recordings: dict[tuple[str, str], Chosen | None] = {}
        self._keys: dict[str, TrackKeys] = {}
        for seed in seeds:
            self.count(seed, None)

    def keys(self, track: Any) -> TrackKeys:
        keys = self._keys.get(track.id)
        if keys is None:
            keys = self._keys[track.id] = keys_of(track)
        return keys

    # Each takes the track's keys where the caller has them: a list of 200 walks ~300
    # candidates, and looking them up again for each question was a fifth of its time.

    def folds(self, track: Any, keys: TrackKeys | None = None) -> bool:
        """Whether the track is a version of one already kept (it is then listed under it)."""
        key = (keys or self.keys(track)).recording
        if key is None or key not in self.recordings:
            return False
        kept = self.recordings[key]
        if kept is not None and kept.track.id != track.id:
            kept.versions.append(track)
        return True

    def within_caps(self, track: Any, keys: TrackKeys | None = None) -> bool:
        artist, _, album = keys or self.keys(track)
        return (artist is None or self.artists.get(artist, 0) < self.caps.per_artist) and (
            album is None or self.albums.get(album, 0) < self.caps.per_album
        )

    def count(self, track: Any, chosen: Chosen | None, keys: TrackKeys | None = None) -> None:
        artist, recording, album = keys or self.keys(track)
        if artist is not None:
            self.artists[artist] = self.artists.get(artist, 0) + 1
        if album is not None:
            self.albums[album] = self.albums.get(album, 0) + 1
        if recording is not None:
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
        if track is None:
            continue
        keys = shaper.keys(track)
        if shaper.folds(track, keys):
            continue
        if len(chosen) < limit and shaper.within_caps(track, keys):
            kept = Chosen(content, track, value)
            chosen.append(kept)
            shaper.count(track, kept, keys)
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
