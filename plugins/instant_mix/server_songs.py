"""The music server's ids, as the instant-mix answers need them: its song id to our track, our
tracks to its song ids (answers carry only songs the server has), its artists. Whichever
plugin matches that server answers, through hooks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from soundspan_hooks import HostContext, RankedTrack
from soundspan_plugins.instant_mix.errors import ApiError
from soundspan_plugins.instant_mix.settings import NAME

# the first look is a tenth larger than the answer, for the few tracks the server lacks; a list
# thinned more than that asks for twice as many, up to the ceiling
FIRST_LOOK_MARGIN = 10
MORE_CANDIDATES = 2


class ServerSongs:
    """One request's music server: `server=`, else [instant_mix] default_server, else the one
    the plugins agree on (subsonic where enabled, else the only one)."""

    def __init__(self, host: HostContext, server: str | None) -> None:
        self.host = host
        self.server = server or host.section(NAME).default_server

    async def _ask(self, hook_name: str, **kwargs: Any) -> Any:
        hook = getattr(self.host.hook, hook_name)
        answer = hook(host=self.host, server=self.server, **kwargs)
        if answer is None:
            raise self._nobody_answers([impl.plugin_name for impl in hook.get_hookimpls()])
        return await answer

    def _nobody_answers(self, servers: list[str]) -> ApiError:
        if self.server is not None:
            return ApiError(
                400,
                f"no music server plugin answers for server={self.server[:100]!r}; enabled: "
                f"{', '.join(servers) or 'none'}",
            )
        if len(servers) > 1:
            return ApiError(
                409,
                f"several music server plugins are enabled ({', '.join(servers)}): set "
                "[instant_mix] default_server to the one whose ids the player's plugin sends",
            )
        if servers:  # enabled, but its matching has not started
            return ApiError(503, f"[{servers[0]}] is not matching song ids yet")
        return ApiError(
            409,
            "no music server plugin is enabled to match song ids: enable [subsonic], [jellyfin]"
            " or [lyrion]",
        )

    async def track_of(self, song_id: str) -> str:
        """Our track matched to the song; a 404 where none is (the server then asks its next
        agent)."""
        found = await self.tracks_of([song_id])
        if song_id not in found:
            raise ApiError(
                404,
                f"song {song_id[:100]!r} is not matched to a track of this library (yet); "
                "GET /api/subsonic/unmatched (or /api/jellyfin/status, /api/lyrion/status) "
                "tells what is unmatched",
            )
        return found[song_id]

    async def tracks_of(self, song_ids: list[str]) -> dict[str, str]:
        return await self._ask("soundspan_server_track_ids", song_ids=song_ids)

    async def songs_of(self, track_ids: list[str]) -> dict[str, str]:
        return await self._ask("soundspan_server_song_ids", track_ids=track_ids)

    async def artist_name(self, artist_id: str) -> str | None:
        return await self._ask("soundspan_server_artist_name", artist_id=artist_id)

    async def artist_ids(self, song_ids: list[str]) -> dict[str, str]:
        return await self._ask("soundspan_server_artist_ids", song_ids=song_ids)

    async def on_server(
        self, ranked: Callable[[int], Awaitable[list[RankedTrack]]], limit: int, ceiling: int
    ) -> list[tuple[str, RankedTrack]]:
        """The first `limit` of `ranked(count)` that the server has, with their song ids;
        asks for more while songs it lacks leave the list short and more may exist."""
        count = min(limit + limit // FIRST_LOOK_MARGIN + 1, ceiling)
        while True:
            found = await ranked(count)
            songs = await self.songs_of([track.track_id for track in found])
            kept = [(songs[track.track_id], track) for track in found if track.track_id in songs]
            if len(kept) >= limit or len(found) < count or count >= ceiling:
                return kept[:limit]
            count = min(count * MORE_CANDIDATES, ceiling)
