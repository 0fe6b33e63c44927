"""Playlists that keep themselves fresh: a recipe rebuilt and sent to a server user on its own
schedule, soon after new analyses land, and on request: one RefreshCoordinator per playlist
(the shape of Home Assistant's DataUpdateCoordinator), the playlists taking turns.

A refresh builds the whole list first (through `soundspan_playlist_tracks`, answered by
vibe_api), then replaces the server playlist's songs in one call; a failure leaves the server
as it was, keeps the last good state, and retries with a back-off.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy import text

from soundspan_hooks import HostContext
from soundspan_hooks.coordinator import RefreshCoordinator, RefreshStatus
from soundspan_plugins.shared.playlist_names import PlaylistName
from soundspan_plugins.subsonic.client import SubsonicError, shown
from soundspan_plugins.subsonic.coordinator import together
from soundspan_plugins.subsonic.sending import (
    NothingToSend,
    PlaylistSender,
    PlaylistWithdrawn,
    SentPlaylist,
    UnknownServerUser,
)

log = logging.getLogger(__name__)
RECIPES = ("search", "similar", "mix", "path", "track_ids", "starred")
MAX_MIX_ITEMS = 20  # what a vibe_api mix takes
MIN_REFRESH_SECONDS = 60.0  # each refresh rewrites a playlist on the user's server


class MixRecipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    add: list[str] = Field(min_length=1, max_length=MAX_MIX_ITEMS)
    subtract: list[str] = Field([], max_length=MAX_MIX_ITEMS)


class PathRecipe(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    start: str = Field(alias="from", min_length=1, max_length=64)
    end: str = Field(alias="to", min_length=1, max_length=64)


class FreshPlaylist(BaseModel):
    """One playlist on one server user's account, rebuilt from exactly one recipe."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"oneOf": [{"required": [recipe]} for recipe in RECIPES]},
    )

    name: PlaylistName
    user: str = Field(min_length=1, max_length=100, description="A server user of the settings.")
    limit: int = Field(50, ge=1, le=200, description="Tracks at most (a path's length).")
    refresh_seconds: float = Field(
        86400.0,
        ge=MIN_REFRESH_SECONDS,
        description=f"Seconds between refreshes, {MIN_REFRESH_SECONDS:.0f} at least.",
    )
    search: str | None = Field(None, min_length=1, max_length=500, description="A text.")
    similar: str | None = Field(None, min_length=1, max_length=64, description="A track id.")
    mix: MixRecipe | None = Field(None, description="Track ids or texts to add and subtract.")
    path: PathRecipe | None = Field(None, description="From one track id to another.")
    track_ids: list[str] | None = Field(None, min_length=1, max_length=1000)
    starred: Literal[True] | None = Field(
        None, description="A mix of the user's starred songs (the latest 20 we have)."
    )

    @model_validator(mode="after")
    def exactly_one_recipe(self) -> FreshPlaylist:
        given = [name for name in RECIPES if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(RECIPES)}")
        return self

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.user)

    def recipe(self, starred_tracks: list[str] | None = None) -> dict[str, Any]:
        """The recipe as vibe_api takes it (one POST /api/playlists source)."""
        limit = self.limit
        if self.search is not None:
            return {"search": {"text": self.search, "limit": limit}}
        if self.similar is not None:
            return {"similar": {"track_id": self.similar, "limit": limit}}
        if self.mix is not None:
            return {"mix": {**self.mix.model_dump(), "limit": limit}}
        if self.path is not None:
            ends = self.path.model_dump(by_alias=True)
            return {"path": {**ends, "length": max(limit, 2)}}
        if self.track_ids is not None:
            return {"track_ids": self.track_ids[:limit]}
        assert starred_tracks is not None
        return {"mix": {"add": starred_tracks[-MAX_MIX_ITEMS:], "limit": limit}}


@dataclass
class Entry:
    definition: FreshPlaylist
    source: Literal["settings", "api"]
    # its schedule, retry and status; the last good send itself is in subsonic_playlists
    refresher: RefreshCoordinator[SentPlaylist | None] = field(init=False)
    # its last try found nothing to send (nothing analyzed or matched yet): no back-off is
    # owed to the server, so new analyses and matches retry it at once
    waiting_for_tracks: bool = False

    @property
    def status(self) -> RefreshStatus:
        return self.refresher.status


class DefinedInSettings(ValueError):
    """The API cannot change or delete a playlist settings.toml defines."""


class TooManyPlaylists(ValueError):
    """A server user has as many fresh playlists as the settings allow."""


class PlaylistCoordinator:
    """Keeps every fresh playlist fresh: one coordinator each, with its own schedule, taking
    turns so that one playlist is built and sent at a time."""

    def __init__(
        self,
        host: HostContext,
        sender: PlaylistSender,
        from_settings: list[FreshPlaylist],
        retry_seconds: float,
        analysis_delay_seconds: float,
        first_refresh_delay: float,
        max_per_user: int,
    ) -> None:
        self.host = host
        self.sender = sender
        self.retry_seconds = retry_seconds
        self.analysis_delay_seconds = analysis_delay_seconds
        self.max_per_user = max_per_user
        self._turns = asyncio.Lock()
        self._first_refresh_delay = first_refresh_delay
        self.entries = {
            p.key: self._entry(p, "settings", first_refresh_delay) for p in from_settings
        }
        # stored definitions this version cannot read (name, user) -> why: shown, not refreshed
        self.unreadable: dict[tuple[str, str], str] = {}
        # coordinators of playlists deleted or redefined: a refresh in flight ends by itself
        self._retired: list[RefreshCoordinator[SentPlaylist | None]] = []
        self._started = False

    def _entry(
        self, definition: FreshPlaylist, source: Literal["settings", "api"], first: float
    ) -> Entry:
        entry = Entry(definition, source)
        entry.refresher = RefreshCoordinator(
            f"fresh playlist {definition.name!r} of {definition.user!r}",
            lambda: self.refresh(entry),
            logger=log,
            interval=definition.refresh_seconds,
            retry=self.retry_seconds,
            first_refresh=first,
            failed=lambda error, retry_in: self._failed(entry, error, retry_in),
            turns=self._turns,
            clean=shown,
        )
        return entry

    async def start(self) -> None:
        """Load the playlists the API defined, then refresh in the background. A stored one
        that no longer validates is logged, listed and skipped: it never stops a start."""
        async with self.host.engine.connect() as connection:
            rows = await connection.execute(
                text("SELECT name, server_user, definition FROM subsonic_fresh_playlists")
            )
            for row in rows:
                try:
                    definition = FreshPlaylist.model_validate(row.definition)
                except ValidationError as error:
                    self._unreadable((row.name, row.server_user), error)
                    continue
                if definition.key not in self.entries:
                    self.entries[definition.key] = self._entry(
                        definition, "api", self._first_refresh_delay
                    )
        self._started = True
        for entry in self.entries.values():
            entry.refresher.start()

    def _unreadable(self, key: tuple[str, str], error: ValidationError) -> None:
        problems = "; ".join(
            f"{'.'.join(map(str, problem['loc'])) or 'definition'}: {problem['msg']}"
            for problem in error.errors()
        )
        self.unreadable[key] = shown(f"the stored definition is not valid ({problems})")[:500]
        log.warning("subsonic: fresh playlist %s of %s skipped: %s; delete it with"
                    " DELETE /api/subsonic/playlists/{user}/{name} and define it again",
                    shown(repr(key[0])), shown(repr(key[1])), self.unreadable[key])  # fmt: skip

    async def stop(self) -> None:
        refreshers = [entry.refresher for entry in self.entries.values()] + self._retired
        await asyncio.gather(*(refresher.stop() for refresher in refreshers))

    def background(self) -> dict[str, object]:
        """The refreshers' tasks as one, for the status: their crashes, and the last."""
        refreshers = [entry.refresher for entry in self.entries.values()]
        return together("fresh playlists refresher", refreshers + self._retired)

    async def define(self, definition: FreshPlaylist) -> None:
        """Keep a playlist the API defined (replacing one of the same name and user); it is
        refreshed at once."""
        self._not_from_settings(definition.key)
        self.sender.client(definition.user)  # an unknown user is refused now, not at refresh
        others = [
            key for key in self.entries if key[1] == definition.user and key != definition.key
        ]
        if len(others) >= self.max_per_user:
            raise TooManyPlaylists(
                f"{definition.user[:100]!r} has {len(others)} fresh playlists, the most"
                " [subsonic] max_fresh_playlists_per_user allows; delete one first"
            )
        async with self.host.engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO subsonic_fresh_playlists (name, server_user, definition)"
                    " VALUES (:name, :user, CAST(:definition AS jsonb))"
                    " ON CONFLICT (name, server_user) DO UPDATE SET"
                    " definition = excluded.definition, defined_at = now()"
                ),
                {
                    "name": definition.name,
                    "user": definition.user,
                    "definition": definition.model_dump_json(exclude_none=True, by_alias=True),
                },
            )
        self._retire(self.entries.get(definition.key))
        self.entries[definition.key] = entry = self._entry(definition, "api", 0.0)
        self.unreadable.pop(definition.key, None)
        if self._started:
            entry.refresher.start()

    async def forget(self, key: tuple[str, str]) -> bool:
        """Stop refreshing a playlist the API defined; False if there is none."""
        self._not_from_settings(key)
        async with self.host.engine.begin() as connection:
            await connection.execute(
                text(
                    "DELETE FROM subsonic_fresh_playlists"
                    " WHERE name = :name AND server_user = :user"
                ),
                {"name": key[0], "user": key[1]},
            )
        unreadable = self.unreadable.pop(key, None) is not None
        entry = self.entries.pop(key, None)
        self._retire(entry)
        return entry is not None or unreadable

    def _retire(self, entry: Entry | None) -> None:
        """No more refreshes for a playlist gone from `entries`; one in flight is not cut
        short (it sees that it is no one's any more), and stop() still awaits it."""
        self._retired = [refresher for refresher in self._retired if refresher.task.running]
        if entry is not None:
            entry.refresher.close()
            self._retired.append(entry.refresher)

    def _not_from_settings(self, key: tuple[str, str]) -> None:
        entry = self.entries.get(key)
        if entry is not None and entry.source == "settings":
            raise DefinedInSettings(
                f"playlist {key[0]!r} of {key[1]!r} is defined in settings.toml"
                " ([[subsonic.playlists]]); change or remove it there"
            )

    def analyses_landed(self) -> None:
        """New results may change every list: refresh them soon, at most once per delay (a
        long analysis run refreshes now and then, not never); back-offs stand."""
        for entry in self.entries.values():
            if entry.status.failures == 0 or entry.waiting_for_tracks:
                entry.refresher.request_refresh(self.analysis_delay_seconds)

    def matches_changed(self) -> None:
        """Playlists not yet sent, or failing (perhaps for want of matches), try again now;
        the others may now find songs for more of their tracks, so they refresh soon."""
        for entry in self.entries.values():
            if entry.status.last_success is None or entry.status.failures:
                entry.refresher.request_refresh()
        self.analyses_landed()

    def refresh_soon(self) -> None:
        """Refresh every fresh playlist now (an explicit request cuts back-offs short)."""
        for entry in self.entries.values():
            entry.refresher.request_refresh()

    async def refresh(self, entry: Entry) -> SentPlaylist | None:
        """Build and send one playlist; on failure the server keeps the last good one. None
        where the playlist was deleted or redefined meanwhile: nothing was sent."""
        definition = entry.definition
        try:
            track_ids = await self._track_ids(definition)
            if self.entries.get(definition.key) is not entry:
                return None  # deleted or redefined meanwhile: this list is no one's any more
            # checked again under the send's lock: a delete that came meanwhile has removed
            # the server's playlist, and a send now would make it again, an orphan
            sent = await self.sender.send(
                definition.name,
                definition.user,
                track_ids,
                still_wanted=lambda: self.entries.get(definition.key) is entry,
            )
        except PlaylistWithdrawn:
            return None
        entry.waiting_for_tracks = False
        log.info("subsonic: playlist %r of %r: %d songs, %d tracks without one",
                 sent.name, sent.server_user, sent.songs, sent.unmatched)  # fmt: skip
        return sent

    def _failed(self, entry: Entry, error: Exception, retry_in: float) -> str:
        """The server, the database or a recipe failed: say so, and why (the refresher
        retries later)."""
        expected = SubsonicError | NothingToSend | UnknownServerUser | web.HTTPException
        if not isinstance(error, expected):
            log.error("subsonic: refresh of playlist %r failed", entry.definition.name,
                      exc_info=error)  # fmt: skip
        entry.waiting_for_tracks = isinstance(error, NothingToSend)
        reason = _reason(error)
        # the same reason again is no news: one WARNING, then quieter lines per retry
        repeated = entry.status.error == reason
        log.log(logging.INFO if repeated else logging.WARNING,
                "subsonic: playlist %r not refreshed (%s); retry in %.0f s",
                entry.definition.name, reason, retry_in)  # fmt: skip
        return reason

    async def _track_ids(self, definition: FreshPlaylist) -> list[str]:
        """The whole list, before the server is touched (except to read what is starred)."""
        starred = None
        if definition.starred:
            client = self.sender.client(definition.user)
            starred = await self.sender.tracks_for(await client.starred_song_ids())
            if not starred:
                raise NothingToSend(
                    f"{definition.user!r} has starred no song that we have (and have matched)"
                )
        answer = self.host.hook.soundspan_playlist_tracks(
            host=self.host, recipe=definition.recipe(starred)
        )
        if answer is None:
            raise NothingToSend("no plugin builds playlists: enable [vibe_api]")
        return await answer


def _reason(error: Exception) -> str:
    if isinstance(error, web.HTTPException):
        return f"the recipe failed: {error.reason}"
    return shown(str(error)) or type(error).__name__
