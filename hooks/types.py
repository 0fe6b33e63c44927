"""Small, frozen types carried by the hooks. No behaviour lives here."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import pluggy
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


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


@dataclass(frozen=True)
class TrackFacts:
    """What ingest read from a file: its content identity, stat and tags."""

    fingerprint: str  # identity of the audio, not the path: moves and retags keep it, edits not
    size: int
    mtime: float
    title: str | None = None
    artist: str | None = None
    album: str | None = None
    duration: float | None = None  # seconds
    album_artist: str | None = None
    track_number: int | None = None
    disc_number: int | None = None
    year: int | None = None
    genre: str | None = None
    isrc: str | None = None
    musicbrainz_recording_id: str | None = None  # Picard's "musicbrainz_trackid" tag
    # the identity every file had before fingerprints hashed only the audio (tags included):
    # finds content recorded that way, so that an upgrade analyzes nothing again
    bytes_fingerprint: str | None = None


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
    embeds_text: bool = False  # answers soundspan_embed_text
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


class HostContext(Protocol):
    """What the host offers plugins: settings, the database and the hooks. Nothing about audio."""

    music_dir: Path
    data_dir: Path
    engine: AsyncEngine
    hook: pluggy.HookRelay
    app: web.Application  # keep per-host plugin state here, under the plugin's own AppKey

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

    def analysis_progress(self) -> Awaitable[dict[str, dict]]:
        """Per analyzer with jobs: {"counts": jobs by state over present tracks, and the current
        run's tracks_per_minute, audio_minutes_per_minute, audio_minutes_waiting, eta_seconds,
        run_started_at}."""
        ...

    def analysis_notes(self, analyzer_versions: Mapping[str, str]) -> Awaitable[dict[str, dict]]:
        """Per analyzer: {"queued_because": [{"reason", "jobs"}] of its waiting jobs,
        "outdated_workers": [{"worker", "version", "last_seen"}] seen working on a version
        other than `analyzer_versions[name]`}."""
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
