"""The hook specifications: a table of contents of the system.

A file event walks forward through these hooks exactly once:
watcher -> soundspan_library_event -> host queue -> an analyzer's analyze() -> database row
-> soundspan_result_stored -> the API reads it.

Hooks may answer with an awaitable; the host awaits it. Plugins never import each other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING

import pluggy
from aiohttp import web

from soundspan_hooks.analyzers import Analyzer
from soundspan_hooks.types import (
    Check,
    HostContext,
    LibraryEvent,
    PluginSettings,
    RankedTrack,
    SettingsSection,
    StatusPanel,
)

if TYPE_CHECKING:  # the command line's libraries are not loaded where no command runs
    import typer

hookspec = pluggy.HookspecMarker("soundspan")
hookimpl = pluggy.HookimplMarker("soundspan")


# --- Configuration and lifetime ------------------------------------------------------------


@hookspec
def soundspan_settings() -> SettingsSection:
    """Declare this plugin's settings section (name, defaults, types); called before start-up.

    A typo or a bad value in that section stops start-up with one line that names it.
    """


@hookspec
def soundspan_migrations() -> Path | None:
    """Return a folder of alembic revisions for this plugin's tables, applied at start-up."""


@hookspec
def soundspan_lifespan(host: HostContext) -> AbstractAsyncContextManager[None] | None:
    """Return a context entered once the database is ready and exited at shut-down.

    Open pools, observers and caches here; contexts exit in reverse order of entry.
    """


@hookspec
def soundspan_routes() -> web.RouteTableDef | None:
    """Return the HTTP routes this plugin adds; handlers find the host at `request.app[HOST]`."""


@hookspec(firstresult=True)
def soundspan_open_without_token(host: HostContext, request: web.Request) -> bool | None:
    """Whether a request that brings no API token may pass anyway: True only for a route of
    this plugin that changes nothing, from a client its settings trust; None: token required."""


@hookspec
def soundspan_openapi() -> dict | None:
    """Describe this plugin's routes: {"paths": {...}, "schemas": {...}} (see openapi.py)."""


@hookspec
def soundspan_doctor(
    sections: Mapping[str, PluginSettings], music_dir: Path, data_dir: Path
) -> list[Check] | None:
    """Check what this plugin needs (models, GPU, folders) without starting it, for
    `soundspan-host doctor`; `sections` holds every plugin's settings by section name."""


# --- The command line ----------------------------------------------------------------------


@hookspec
def soundspan_commands(cli: typer.Typer) -> None:
    """At `soundspan-host`'s start, for enabled plugins: add commands to `cli` (see cli.py)."""


# --- Status --------------------------------------------------------------------------------


@hookspec
def soundspan_status_fields(host: HostContext) -> Awaitable[dict] | None:
    """Fields this plugin adds to GET /api/analysis/status at each read, e.g. vibe_api's
    {"excluded": {...}}; a field the host has is never replaced."""


@hookspec
def soundspan_status_panels() -> list[StatusPanel] | None:
    """The status page's panels this plugin feeds, each with the route it reads; GET
    /api/plugins lists them per plugin, so the page shows only what enabled plugins serve."""


# --- The music library ---------------------------------------------------------------------


@hookspec
def soundspan_library_event(host: HostContext, event: LibraryEvent) -> Awaitable[None] | None:
    """A music file appeared, changed, moved or vanished under the music dir.

    Ingest plugins call it in the order things happened; the host answers it by updating
    tracks and queueing analysis. For a burst, call it for many events before awaiting the
    answers: the host records the events that wait together in one transaction.
    """


@hookspec
def soundspan_library_exclusions(host: HostContext) -> list[Path] | None:
    """Folders inside the music dir that a plugin writes itself (playlists, say); ingest
    leaves them alone. Relative paths are taken from the music dir."""


# --- Analyzers -----------------------------------------------------------------------------


@hookspec
def soundspan_analyzers(host: HostContext) -> list[Analyzer] | None:
    """Return the analyzers this plugin provides (see analyzers.py: the Analyzer protocol and
    its optional capabilities); asked once at start, kept by the host in `host.analyzers`."""


@hookspec
def soundspan_result_stored(
    host: HostContext, analyzer: str, content_id: str
) -> Awaitable[None] | None:
    """An analyzer's fresh result for a content is stored (caches and maps may refresh)."""


# --- Playlists -----------------------------------------------------------------------------


@hookspec(firstresult=True)
def soundspan_playlist_tracks(host: HostContext, recipe: dict) -> Awaitable[list[str]] | None:
    """Build a playlist's track ids, in order, from a recipe: one POST /api/playlists source,
    e.g. {"search": {"text": "rainy night", "limit": 50}}; answered by vibe_api."""


@hookspec(firstresult=True)
def soundspan_send_playlist(
    host: HostContext, name: str, track_ids: list[str], destination: dict
) -> Awaitable[dict] | None:
    """Put a playlist on a music server, replacing the songs of the one sent under `name`
    before; `destination` is e.g. {"server_user": "alice"}. Answers what was sent."""


# --- Lists for other plugins (answered by vibe_api) ----------------------------------------


@hookspec(firstresult=True)
def soundspan_similar_tracks(
    host: HostContext, track_id: str, limit: int, shaped: bool, max_per_artist: int
) -> Awaitable[list[RankedTrack]] | None:
    """Up to `limit` tracks nearest to one of ours, nearest first, itself left out; `shaped`:
    versions of a recording folded, at most `max_per_artist` per artist and the vibe API's cap
    per album. Raises TrackUnavailable for an unknown or unanalyzed track."""


@hookspec(firstresult=True)
def soundspan_track_path(
    host: HostContext, start_track_id: str, end_track_id: str, length: int
) -> Awaitable[list[RankedTrack]] | None:
    """About `length` tracks stepping evenly from one of ours to another, both ends included.
    Raises TrackUnavailable for an unknown or unanalyzed end."""


@hookspec(firstresult=True)
def soundspan_track_mix(
    host: HostContext, add: list[str], subtract: list[str], limit: int
) -> Awaitable[list[RankedTrack]] | None:
    """Up to `limit` tracks nearest to the sum of some tracks' vibes less others', the mix's
    own tracks left out. Raises TrackUnavailable for an unknown or unanalyzed one."""


# --- Music servers: their ids for our tracks (answered by e.g. subsonic) -------------------


@hookspec(firstresult=True)
def soundspan_server_track_ids(
    host: HostContext, server: str | None, song_ids: list[str]
) -> Awaitable[dict[str, str]] | None:
    """Our track for each of these song ids of a music server (`server`: its plugin's name;
    None: the first one); song ids matched to none of ours are left out."""


@hookspec(firstresult=True)
def soundspan_server_song_ids(
    host: HostContext, server: str | None, track_ids: list[str]
) -> Awaitable[dict[str, str]] | None:
    """The music server's song id for each of our tracks it has; the others are left out."""


@hookspec(firstresult=True)
def soundspan_server_artist_name(
    host: HostContext, server: str | None, artist_id: str
) -> Awaitable[str | None] | None:
    """The name of a music server's artist, by the server's artist id; None if it has none.
    Raises ConnectionError where the server cannot be asked."""


@hookspec(firstresult=True)
def soundspan_server_artist_ids(
    host: HostContext, server: str | None, song_ids: list[str]
) -> Awaitable[dict[str, str]] | None:
    """The music server's artist id for each of these songs of its own it knows. Raises
    ConnectionError where the server cannot be asked."""
