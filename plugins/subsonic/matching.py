"""Which server song is which of our tracks: by path, else MusicBrainz recording id, else
normalised title, artist and album with a duration within a tolerance. Pure: no I/O."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

DURATION_TOLERANCE_SECONDS = 2.0
# what servers call the album of a file without an album tag (supysonic, Navidrome)
NO_ALBUM = frozenset({"[non-album tracks]", "[unknown album]"})


@dataclass(frozen=True)
class ServerSong:
    id: str
    path: str | None  # as the server reports it; None where it reports none
    title: str | None
    artist: str | None
    album: str | None
    duration: float | None
    musicbrainz_id: str | None  # OpenSubsonic `musicBrainzId` of the recording

    @classmethod
    def from_child(cls, child: dict[str, Any]) -> ServerSong:
        duration = child.get("duration")
        return cls(
            id=str(child["id"]),
            path=child.get("path") or None,
            title=child.get("title"),
            artist=child.get("artist") or child.get("displayArtist"),
            album=None if (child.get("album") or "").lower() in NO_ALBUM else child.get("album"),
            duration=float(duration) if duration is not None else None,
            musicbrainz_id=(child.get("musicBrainzId") or "").lower() or None,
        )

    @property
    def signature(self) -> str:
        """Changes when anything matching reads changes (a re-tagged or moved song)."""
        fields = (
            self.path,
            self.title,
            self.artist,
            self.album,
            self.duration,
            self.musicbrainz_id,
        )
        return hashlib.blake2b(repr(fields).encode(), digest_size=8).hexdigest()


@dataclass(frozen=True)
class OurTrack:
    id: str
    path: str
    title: str | None
    artist: str | None
    album_artist: str | None
    album: str | None
    duration: float | None
    musicbrainz_recording_id: str | None


@dataclass(frozen=True)
class Match:
    """A track's song (with how it was found), or None with the reason why there is none."""

    song: ServerSong | None
    method: str | None  # "path" | "musicbrainz" | "tags"
    reason: str | None


@dataclass(frozen=True)
class PathMapping:
    """A song at `server_prefix` + X on the server is our `library_prefix` + X."""

    server_prefix: str = ""
    library_prefix: str = ""

    def ours(self, server_path: str) -> str | None:
        server_path = server_path.replace("\\", "/").lstrip("/")
        if not server_path.startswith(self.server_prefix):
            return None
        return self.library_prefix + server_path[len(self.server_prefix) :]


def normalised(text: str | None) -> str:
    """Case, accents, punctuation and spacing left out: "Beyoncé - Halo!" ~ "beyonce halo"."""
    decomposed = unicodedata.normalize("NFKD", text or "")
    letters = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return " ".join(re.sub(r"[^\w]+", " ", letters).split())


class SongIndex:
    """The server's songs, looked up by our path, recording id, and normalised tags."""

    def __init__(self, songs: list[ServerSong], mapping: PathMapping) -> None:
        self.by_id = {song.id: song for song in songs}
        self.by_path: dict[str, ServerSong] = {}
        self.by_recording: dict[str, list[ServerSong]] = defaultdict(list)
        self.by_tags: dict[tuple[str, str, str], list[ServerSong]] = defaultdict(list)
        # a file without an album tag may be any album's on the server (or none's)
        self.by_title_artist: dict[tuple[str, str], list[ServerSong]] = defaultdict(list)
        self.reports_paths = False
        for song in songs:
            if song.path and (ours := mapping.ours(song.path)) is not None:
                self.by_path[ours] = song
                self.reports_paths = True
            if song.musicbrainz_id:
                self.by_recording[song.musicbrainz_id].append(song)
            key = (normalised(song.title), normalised(song.artist), normalised(song.album))
            if key[0]:
                self.by_tags[key].append(song)
                self.by_title_artist[key[:2]].append(song)
        listing = sorted((song.id, song.signature) for song in songs)
        self.digest = hashlib.blake2b(repr(listing).encode(), digest_size=16).hexdigest()

    def match(self, track: OurTrack) -> Match:
        if (song := self.by_path.get(track.path)) is not None:
            return Match(song, "path", None)
        recording = (track.musicbrainz_recording_id or "").lower()
        if recording and (songs := self.by_recording.get(recording)):
            return Match(_closest(songs, track.duration), "musicbrainz", None)
        if not track.title:
            return Match(None, None, self._no_title_reason())
        title = normalised(track.title)
        candidates = [
            song
            for artist in {track.artist, track.album_artist} - {None}
            for song in (
                self.by_tags.get((title, normalised(artist), normalised(track.album)), [])
                if track.album
                else self.by_title_artist.get((title, normalised(artist)), [])
            )
        ]
        if not candidates:
            return Match(None, None, self._nothing_alike_reason(track))
        if track.duration is None:
            return Match(candidates[0], "tags", None)
        near = [
            song
            for song in candidates
            if song.duration is not None
            and abs(song.duration - track.duration) <= DURATION_TOLERANCE_SECONDS
        ]
        if not near:
            lengths = ", ".join(f"{s.duration:.0f} s" for s in candidates if s.duration)
            return Match(
                None,
                None,
                f"{len(candidates)} server song(s) have this"
                f" {'title, artist and album' if track.album else 'title and artist'}, but none"
                f" lasts within {DURATION_TOLERANCE_SECONDS:.0f} s of ours ({track.duration:.0f} s;"
                f" theirs: {lengths or 'unknown'})",
            )
        return Match(_closest(near, track.duration), "tags", None)

    def _no_title_reason(self) -> str:
        where = (
            "no server song at this path" if self.reports_paths else "the server reports no paths"
        )
        return f"{where}, and the file has no title tag to match by; tag it, or map the paths"

    def _nothing_alike_reason(self, track: OurTrack) -> str:
        where = (
            "no server song at this path" if self.reports_paths else "the server reports no paths"
        )
        recording = (
            ", nor with its MusicBrainz recording id" if track.musicbrainz_recording_id else ""
        )
        album = f" and album {track.album!r}" if track.album else " (the file has no album tag)"
        return (
            f"{where}{recording}, nor with title {track.title!r}, artist {track.artist!r}"
            f"{album}; has the server scanned this file?"
        )


def _closest(songs: list[ServerSong], duration: float | None) -> ServerSong:
    if duration is None:
        return songs[0]
    return min(songs, key=lambda song: abs((song.duration or 0.0) - duration))
