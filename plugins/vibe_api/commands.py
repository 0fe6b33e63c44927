"""The vibe API's commands: `search`, `similar`, and `playlist` (sent to a music server)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from soundspan_hooks.cli import HostClient, SettingsOption, run_client
from soundspan_hooks.cli_tables import make_console, results_table

console = make_console()


def search(
    ctx: typer.Context,
    text: Annotated[str, typer.Argument(help='What it should sound like: "rainy night jazz".')],
    limit: Annotated[int, typer.Option(min=1, max=200)] = 10,
    settings: SettingsOption = None,
) -> None:
    """Tracks that sound like a description."""
    run_client(ctx, settings, partial(show_search, text=text, limit=limit))


async def show_search(client: HostClient, text: str, limit: int) -> None:
    answer = await client.post("/api/vibe/search", {"text": text, "limit": limit})
    title = f"{text!r} by {answer['analyzer']}"
    if answer.get("matched_tags") is not None:
        title += f" (tags: {', '.join(answer['matched_tags']) or 'none matched'})"
    console.print(results_table(console, title, answer["results"]))


def similar(
    ctx: typer.Context,
    track: Annotated[str, typer.Argument(help="A track id, or a file's path in the library.")],
    limit: Annotated[int, typer.Option(min=1, max=200)] = 10,
    analyzer: Annotated[str | None, typer.Option(help="musicnn or clap (default: best)")] = None,
    settings: SettingsOption = None,
) -> None:
    """Tracks that sound like a track."""
    run_client(ctx, settings, partial(show_similar, track=track, limit=limit, analyzer=analyzer))


async def show_similar(client: HostClient, track: str, limit: int, analyzer: str | None) -> None:
    track_id = await resolve_track(client, track)
    answer = await client.get(f"/api/vibe/similar/{track_id}", limit=limit, analyzer=analyzer)
    title = f"like {answer['track']['path']} by {answer['analyzer']}"
    console.print(results_table(console, title, answer["results"]))


async def resolve_track(client: HostClient, given: str) -> str:
    """A track id from an id or from a path (relative to the library, or to here)."""
    candidates = [given]
    resolved = Path(given).resolve()
    music_dir = client.music_dir.resolve() if client.music_dir is not None else None
    if music_dir is not None and Path(given).exists() and resolved.is_relative_to(music_dir):
        candidates.insert(0, str(resolved.relative_to(music_dir)))
    for path in candidates:
        found = (await client.get("/api/tracks", path=path, limit=1))["tracks"]
        if found:
            return found[0]["id"]
    return given  # perhaps an id; the API says if it is not


def playlist(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The playlist's name; a later send replaces it.")],
    to: Annotated[str, typer.Option("--to", help="The server user whose account gets it.")],
    similar: Annotated[str | None, typer.Option(help="Tracks like this one (id or path).")] = None,
    search: Annotated[str | None, typer.Option(help="Tracks that sound like this text.")] = None,
    mix: Annotated[list[str] | None, typer.Option(help="A track or a text to mix; repeat.")] = None,
    track: Annotated[list[str] | None, typer.Option(help="These tracks, in order; repeat.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 50,
    settings: SettingsOption = None,
) -> None:
    """Send a playlist to a user's account on your Subsonic server (the subsonic plugin)."""
    given = [option for option in (similar, search, mix, track) if option]
    if len(given) != 1:
        raise typer.BadParameter("give exactly one of --similar, --search, --mix, --track")
    run_client(
        ctx,
        settings,
        partial(
            send_playlist, name=name, to=to, similar=similar, search=search, mix=mix,
            tracks=track, limit=limit,
        ),
    )  # fmt: skip


async def send_playlist(
    client: HostClient,
    name: str,
    to: str,
    similar: str | None,
    search: str | None,
    mix: list[str] | None,
    tracks: list[str] | None,
    limit: int,
) -> None:
    body: dict[str, Any] = {"name": name, "send_to": {"server_user": to}}
    if similar:
        body["similar"] = {"track_id": await resolve_track(client, similar), "limit": limit}
    elif search:
        body["search"] = {"text": search, "limit": limit}
    elif mix:
        items = [await resolve_track(client, item) for item in mix]
        body["mix"] = {"add": items, "limit": limit}
    else:
        body["track_ids"] = [await resolve_track(client, item) for item in tracks or []]
    sent = (await client.post("/api/playlists", body))["sent"]
    verb = "made" if sent["created"] else "updated"
    console.print(
        f"{verb} {escape(name)!r} for {escape(to)}: {sent['songs']} songs"
        + (f", {sent['unmatched']} tracks left out (no song on the server)" if sent["unmatched"]
           else "")
    )  # fmt: skip


def add_commands(cli: typer.Typer) -> None:
    for command in (search, similar, playlist):
        cli.command()(command)
