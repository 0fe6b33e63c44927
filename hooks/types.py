"""Small, frozen types carried by the hooks. No behaviour lives here."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args, get_type_hints

import pluggy
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

if TYPE_CHECKING:
    from soundspan_hooks.analyzers import Analyzer


class PluginSettings(BaseModel):
    """Base of every plugin's settings section: unknown keys are errors, never ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="Load this plugin at start-up.")


def legacy_env(name: str, default: Any, description: str, **constraints: Any) -> Any:
    """A setting that an older, unprefixed environment variable (e.g. `CLAP_WORKERS`) also sets.

    The prefixed form (`SOUNDSPAN_CLAP__WORKERS`) wins when both are present.
    """
    return Field(default, description=description, json_schema_extra={"env": name}, **constraints)


WorkerCount = Literal["auto"] | NonNegativeInt
"""An analyzer's `workers` setting: "auto", its share of the host's CPUs (HostContext.worker_share),
or a number of worker processes, which wins (0: remote workers only)."""


@dataclass(frozen=True)
class WorkerShare:
    """How many worker processes an analyzer may start, and how that was decided."""

    workers: int
    explained: str  # e.g. "auto: 1 of 2 CPUs, shared with clap", or "set: workers = 3"


@dataclass(frozen=True)
class SettingsSection:
    """A plugin's own section of settings.toml: its name, and the model typing it."""

    name: str
    model: type[PluginSettings]


class LibraryEventKind(enum.StrEnum):
    APPEARED = "appeared"
    CHANGED = "changed"
    MOVED = "moved"
    VANISHED = "vanished"


def _tag() -> Any:
    """A TrackFacts field that is one of TRACK_TAGS: unknown (None) until read."""
    return field(default=None, metadata={"tag": True})


@dataclass(frozen=True)
class TrackFacts:
    """What ingest read from a file: its content identity, stat and tags (the fields marked
    `_tag()`, in the order the API shows them)."""

    fingerprint: str  # identity of the audio, not the path: moves and retags keep it, edits not
    size: int
    mtime: float
    title: str | None = _tag()
    artist: str | None = _tag()
    album: str | None = _tag()
    duration: float | None = _tag()  # seconds, from the audio stream rather than a tag
    album_artist: str | None = _tag()
    track_number: int | None = _tag()
    disc_number: int | None = _tag()
    year: int | None = _tag()
    genre: str | None = _tag()
    isrc: str | None = _tag()
    musicbrainz_recording_id: str | None = _tag()  # Picard's "musicbrainz_trackid" tag
    # the identity every file had before fingerprints hashed only the audio (tags included):
    # finds content recorded that way, so that an upgrade analyzes nothing again
    bytes_fingerprint: str | None = None


TRACK_TAGS: tuple[str, ...] = tuple(
    found.name for found in fields(TrackFacts) if found.metadata.get("tag")
)
"""The one list of a track's tags: ingest writes them to the `tracks` columns of these names,
the watcher reads them from files, the library views (library_views.py) and the API's Track
show them. A new tag is a `_tag()` field above plus a host migration, which no list can
spare: it adds the column, re-creates the views with it, and sets `tracks.tags_version` to
NULL so the next reconcile reads the new tag from files already on record."""

TRACK_TAG_TYPES: Mapping[str, type] = {
    name: next(kind for kind in get_args(hint) if kind is not type(None))
    for name, hint in get_type_hints(TrackFacts).items()
    if name in TRACK_TAGS
}
"""Each tag's type once read (str, int or float); every tag may be unknown (None)."""


@dataclass(frozen=True)
class LibraryEvent:
    """Something happened to a music file. Paths are relative to the music dir.

    A VANISHED path may be a folder: every track under it vanished.
    """

    kind: LibraryEventKind
    path: str
    old_path: str | None = None  # set for MOVED only
    facts: TrackFacts | None = None  # set for APPEARED and CHANGED


@dataclass(frozen=True)
class TrackFile:
    """A track handed to an analyzer: the content its result is stored under, and its file now."""

    content_id: str  # key of the analyzer's result rows; duplicates and moves share it
    path: Path  # absolute
    relative_path: str


StoreResult = Callable[[AsyncConnection], Awaitable[None]]
"""What an analysis returns: it writes the result on the connection the host hands it,
in the same transaction that marks the job done, so a result is stored exactly once."""


@dataclass(frozen=True)
class AnalyzerInfo:
    """How an analyzer describes itself to the host, the status API and the queue."""

    name: str  # e.g. "musicnn", the queue and the API use it
    version: str  # changes when stored results would change; old results get re-queued
    model_id: str  # e.g. "MSD_musicnn" or "laion/larger_clap_music"
    trained: bool  # False for random or test weights: never reported as a trained model
    dimension: int  # length of the stored embedding
    device: str  # "cpu" or "cuda"
    state: Literal["ready", "loading", "downloading", "unavailable"] = "ready"
    reason: str | None = None  # why it is unavailable, and what to set
    # who answers a search or a similar list that names no analyzer: the highest rank among
    # those able (e.g. CLAP with trained weights loaded over MusiCNN); ties go by name
    search_rank: int = 0
    embedding_table: str | None = None  # (content_id, embedding vector) rows, HNSW cosine index
    workers: int = 1  # tracks it can analyze at once (its pool size); 0: remote workers only
    workers_from: str | None = None  # how `workers` was decided (WorkerShare.explained)
    poll_interval: float = 5.0  # seconds between looks at the queue for work other hosts added
    # while its model downloads: bytes_done, bytes_total, bytes_per_second, eta_seconds, file
    download: dict | None = None
    detail: str | None = None  # one line for people about the model: why a precision was refused


class UnreadableTrack(Exception):
    """Raised by an analyzer for a file that will never analyze (corrupt, truncated, not audio).

    The job fails at once with this message as its reason; any other exception is retried.
    """


@dataclass(frozen=True)
class ContentScore:
    """A content found by a search, with how well it matches (higher is better)."""

    content_id: str
    score: float


@dataclass(frozen=True)
class TagSearch:
    """Contents ranked by the probability of tags named in a query."""

    analyzer: str  # e.g. "musicnn-tags"
    matched_tags: tuple[str, ...]
    results: tuple[ContentScore, ...]


@dataclass(frozen=True)
class TextEmbedding:
    """A text query embedded into one analyzer's vector space."""

    analyzer: str
    vector: tuple[float, ...]


@dataclass(frozen=True)
class Check:
    """One finding of `soundspan-host doctor`: what was checked, how it went, what to do."""

    name: str
    status: Literal["ok", "warn", "fail"]
    detail: str
    fix: str | None = None


@dataclass(frozen=True)
class StatusPanel:
    """A status page panel a plugin feeds, by the name the page knows, and the route it reads.

    "send_playlist": a result list sent to a music server's user; `route` answers
    {"server_users": [...]}, the users playlists can be sent to (POST /api/playlists send_to).
    """

    name: str
    route: str  # e.g. "/api/subsonic/status"


class HostContext(Protocol):
    """What the host offers plugins: settings, the database and the hooks. Nothing about audio."""

    music_dir: Path
    data_dir: Path
    engine: AsyncEngine
    # the same database in autocommit (each statement its own transaction): a read in two
    # round trips where `engine` takes six; for a request's reads that need no transaction
    reader: AsyncEngine
    hook: pluggy.HookRelay
    app: web.Application  # keep per-host plugin state here, under the plugin's own AppKey
    analyzers: Mapping[str, Analyzer]  # every enabled analyzer by name (soundspan_analyzers)
    # True in a host started to answer one CLI command where no host runs: ingest and analysis
    # are the running host's, so plugins start no background work (worker_share answers 0)
    one_command: bool

    def section(self, name: str) -> PluginSettings:
        """The validated settings section of the plugin called `name`."""
        ...

    def call(self, hook_name: str, **kwargs: Any) -> Awaitable[list[Any]]:
        """Call a hook on every plugin, awaiting any awaitable answers."""
        ...

    def worker_share(self, analyzer: str, on_gpu: bool = False) -> WorkerShare:
        """How many worker processes `analyzer` may start: its `workers` setting (a WorkerCount,
        with `threads_per_worker`) where a number, else its share of the CPUs this process may
        use; `on_gpu`: its workers run on a GPU, which takes no share of the CPUs."""
        ...

    def describe_analyzers(self) -> Awaitable[list[AnalyzerInfo]]:
        """Every enabled analyzer as it describes itself right now."""
        ...

    def tracks_on_record(self) -> Awaitable[dict[str, tuple[int, float]]]:
        """Present tracks' relative paths with the size and mtime last seen (for a reconcile)."""
        ...


HOST = web.AppKey("soundspan_host", HostContext)
"""Where a request handler finds the host: `request.app[HOST]`."""


@dataclass(frozen=True)
class RankedTrack:
    """A track of ours in an answer list, with its cosine distance to the query (0: the query
    itself, as at a path's ends; 1: unrelated)."""

    track_id: str
    path: str
    title: str | None
    artist: str | None
    album: str | None
    distance: float


class TrackUnavailable(LookupError):
    """Raised by a hook for a track it cannot answer for: unknown, or not analyzed yet. Its
    message says which and what to do."""
