"""The `soundspan-host` command. Bad configuration ends it with one line and exit code 2."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import TaskID
from rich.text import Text

from soundspan_host.app import create_app, run_analysis_worker
from soundspan_host.cli_tables import (
    Column,
    fitted_table,
    make_console,
    progress_bars,
    progress_fields,
    results_table,
    status_view,
)
from soundspan_host.client import ApiError, HostClient, connect
from soundspan_host.doctor import run_checks
from soundspan_host.errors import ConfigError
from soundspan_host.plugins import load_plugins
from soundspan_host.serving import configure_logging, serve_until_stopped, until_stopped
from soundspan_host.settings import read_settings

console = make_console()
error_console = make_console(stderr=True)

cli = typer.Typer(
    help="Keeps a neural vibe index of a music folder and serves it over REST.",
    no_args_is_help=False,
    add_completion=False,
)

SettingsOption = Annotated[
    Path | None,
    typer.Option("--settings", help="settings.toml to read (default: ./settings.toml)."),
]


@cli.callback(invoke_without_command=True)
def default(ctx: typer.Context, settings: SettingsOption = None) -> None:
    """Serve (the default when no command is given)."""
    if ctx.invoked_subcommand is None:
        serve(settings)


@cli.command()
def serve(settings: SettingsOption = None) -> None:
    """Start the host: database, plugins and the HTTP API, until Ctrl-C or SIGTERM."""
    plugins = load_plugins(read_settings(settings))
    host_settings = plugins.settings.host
    configure_logging(host_settings)
    asyncio.run(serve_until_stopped(create_app(plugins), host_settings))


@cli.command()
def worker(
    analyzer: Annotated[str, typer.Option(help="The analyzer to run, e.g. musicnn or clap.")],
    settings: SettingsOption = None,
) -> None:
    """Analyze from a host's queue on this machine (needs SOUNDSPAN_DATABASE_URL)."""
    plugins = load_plugins(read_settings(settings))
    configure_logging(plugins.settings.host)
    asyncio.run(until_stopped(run_analysis_worker(plugins, analyzer)))


@cli.command()
def scan(
    wait: Annotated[
        bool, typer.Option("--wait", help="Show progress until every analyzer has caught up.")
    ] = False,
    settings: SettingsOption = None,
) -> None:
    """Ask the running host to compare the music dir with its database now."""
    run_client(settings, partial(scan_library, wait=wait), start_private=False)


async def scan_library(client: HostClient, wait: bool) -> None:
    outcome = (await client.post("/api/library/scan", {}))["scan"]
    console.print(f"scan {outcome}")
    if wait:
        await show_progress(client)
    else:
        console.print("the index follows in the background; `--wait` shows its progress")


async def show_progress(client: HostClient, poll_seconds: float = 1.0) -> None:
    """Progress bars per analyzer (done/total, rates, ETA) until the queue is drained."""
    with progress_bars(console) as progress:
        bars: dict[str, TaskID] = {}
        while True:
            scanning = (await client.get("/api/library/scan"))["scanning"]
            status = await client.get("/api/vibe/status")
            busy = scanning
            for analyzer in status["analyzers"]:
                counts = analyzer["counts"]
                total, waiting = sum(counts.values()), counts["pending"] + counts["running"]
                fields = progress_fields(analyzer, wide=console.width >= 100)
                name = analyzer["name"]
                if name not in bars:
                    bars[name] = progress.add_task(name, total=total, **fields)
                progress.update(
                    bars[name], completed=counts["done"] + counts["failed"], total=total, **fields
                )
                busy = busy or (waiting > 0 and analyzer["state"] != "unavailable")
            if not busy:
                return
            await asyncio.sleep(poll_seconds)


@cli.command()
def status(settings: SettingsOption = None) -> None:
    """Analyzers, their models and progress, and the library's size."""
    run_client(settings, show_status)


async def show_status(client: HostClient) -> None:
    for part in status_view(console, await client.get("/api/vibe/status")):
        console.print(part)


@cli.command()
def search(
    text: Annotated[str, typer.Argument(help='What it should sound like: "rainy night jazz".')],
    limit: Annotated[int, typer.Option(min=1, max=200)] = 10,
    settings: SettingsOption = None,
) -> None:
    """Tracks that sound like a description."""
    run_client(settings, partial(show_search, text=text, limit=limit))


async def show_search(client: HostClient, text: str, limit: int) -> None:
    answer = await client.post("/api/vibe/search", {"text": text, "limit": limit})
    title = f"{text!r} by {answer['analyzer']}"
    if answer.get("matched_tags") is not None:
        title += f" (tags: {', '.join(answer['matched_tags']) or 'none matched'})"
    console.print(results_table(console, title, answer["results"]))


@cli.command()
def similar(
    track: Annotated[str, typer.Argument(help="A track id, or a file's path in the library.")],
    limit: Annotated[int, typer.Option(min=1, max=200)] = 10,
    analyzer: Annotated[str | None, typer.Option(help="musicnn or clap (default: best)")] = None,
    settings: SettingsOption = None,
) -> None:
    """Tracks that sound like a track."""
    run_client(settings, partial(show_similar, track=track, limit=limit, analyzer=analyzer))


async def show_similar(client: HostClient, track: str, limit: int, analyzer: str | None) -> None:
    track_id = await resolve_track(client, track, client.settings.music_dir)
    answer = await client.get(f"/api/vibe/similar/{track_id}", limit=limit, analyzer=analyzer)
    title = f"like {answer['track']['path']} by {answer['analyzer']}"
    console.print(results_table(console, title, answer["results"]))


async def resolve_track(client: HostClient, given: str, music_dir: Path) -> str:
    """A track id from an id or from a path (relative to the library, or to here)."""
    candidates = [given]
    resolved, music_dir = Path(given).resolve(), music_dir.resolve()
    if Path(given).exists() and resolved.is_relative_to(music_dir):
        candidates.insert(0, str(resolved.relative_to(music_dir)))
    for path in candidates:
        found = (await client.get("/api/tracks", path=path, limit=1))["tracks"]
        if found:
            return found[0]["id"]
    return given  # perhaps an id; the API says if it is not


@cli.command()
def failed(
    retry: Annotated[bool, typer.Option("--retry", help="Queue them all again.")] = False,
    analyzer: Annotated[str | None, typer.Option(help="Only this analyzer's.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    settings: SettingsOption = None,
) -> None:
    """Files whose analysis failed, and why."""
    run_client(settings, partial(show_failed, retry=retry, analyzer=analyzer, limit=limit))


async def show_failed(client: HostClient, retry: bool, analyzer: str | None, limit: int) -> None:
    answer = await client.get("/api/analysis/failures", analyzer=analyzer, limit=limit)
    columns = (
        Column("file", wraps=True),
        Column("analyzer"),
        Column("attempts", justify="right"),
        Column("reason", under="file"),
    )
    rows = [
        (
            Text(failure["track"]["path"], style="bold"),
            failure["analyzer"],
            str(failure["attempts"]),
            failure["error"] or "",
        )
        for failure in answer["failures"]
    ]
    console.print(fitted_table(console, f"failed analyses: {answer['total']}", columns, rows))
    if retry:
        body = {"analyzer": analyzer} if analyzer else {}
        requeued = (await client.post("/api/analysis/retry", body))["requeued"]
        console.print(f"queued {requeued} again")


@cli.command()
def unmatched(
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    settings: SettingsOption = None,
) -> None:
    """Tracks your Subsonic server has no song for, and why (the subsonic plugin)."""
    run_client(settings, partial(show_unmatched, limit=limit))


async def show_unmatched(client: HostClient, limit: int) -> None:
    status = await client.get("/api/subsonic/status")
    answer = await client.get("/api/subsonic/unmatched", limit=limit)
    title = f"tracks without a song on the server: {answer['total']}"
    columns = (Column("file", wraps=True), Column("reason", under="file"))
    rows = [
        (Text(item["track"]["path"], style="bold"), item["reason"]) for item in answer["tracks"]
    ]
    console.print(fitted_table(console, title, columns, rows))
    if status["error"]:
        console.print(f"last refresh failed: {escape(status['error'])}")


@cli.command()
def playlist(
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
    music_dir = client.settings.music_dir
    body: dict[str, Any] = {"name": name, "send_to": {"server_user": to}}
    if similar:
        track_id = await resolve_track(client, similar, music_dir)
        body["similar"] = {"track_id": track_id, "limit": limit}
    elif search:
        body["search"] = {"text": search, "limit": limit}
    elif mix:
        items = [await resolve_track(client, item, music_dir) for item in mix]
        body["mix"] = {"add": items, "limit": limit}
    else:
        body["track_ids"] = [await resolve_track(client, item, music_dir) for item in tracks or []]
    sent = (await client.post("/api/playlists", body))["sent"]
    verb = "made" if sent["created"] else "updated"
    console.print(
        f"{verb} {escape(name)!r} for {escape(to)}: {sent['songs']} songs"
        + (f", {sent['unmatched']} tracks left out (no song on the server)" if sent["unmatched"]
           else "")
    )  # fmt: skip


@cli.command()
def doctor(settings: SettingsOption = None) -> None:
    """Check the settings, folders, database, models and GPU, and say what to fix."""
    marks = {"ok": Text("ok", "green"), "warn": Text("warn", "yellow"), "fail": Text("FAIL", "red")}
    columns = (
        Column("check"),
        Column(""),
        Column("finding", wraps=True),
        Column("what to do", under="finding"),
    )
    logging.basicConfig(level=logging.ERROR)  # the table says it all, once
    checks = run_checks(settings)
    rows = [
        (check.name, marks[check.status], check.detail, Text(check.fix or "", style="yellow"))
        for check in checks
    ]
    console.print(fitted_table(console, "soundspan doctor", columns, rows))
    failed = [check.name for check in checks if check.status == "fail"]
    if failed:
        console.print(f"[red]{len(failed)} problem(s) to fix:[/] {', '.join(failed)}")
        raise typer.Exit(1)
    console.print("[green]nothing stops the host from running[/]")


def run_client(
    settings: Path | None,
    command: Callable[[HostClient], Awaitable[None]],
    start_private: bool = True,
) -> None:
    """Run a command against the host; an error answer ends it with its message, exit 1."""

    plugins = load_plugins(read_settings(settings))

    async def main() -> None:
        async with connect(plugins, settings, start_private=start_private) as client:
            if client.private:
                error_console.print("(no host is running: read from its database)")
            await command(client)

    # a private host's start-up chatter would bury the answer: warnings only
    configure_logging(plugins.settings.host.model_copy(update={"log_level": "WARNING"}))
    try:
        asyncio.run(main())
    except ApiError as error:
        error_console.print(f"soundspan-host: {escape(str(error))}")
        raise typer.Exit(1) from None


def main() -> None:
    """Console-script entry point."""
    try:
        cli(standalone_mode=True)
    except ConfigError as error:
        print(f"soundspan-host: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
