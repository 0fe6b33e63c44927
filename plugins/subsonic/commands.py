"""`soundspan-host unmatched`: the tracks the Subsonic server has no song for, and why."""

from __future__ import annotations

from functools import partial
from typing import Annotated

import typer
from rich.markup import escape
from rich.text import Text

from soundspan_hooks.cli import HostClient, SettingsOption, run_client
from soundspan_hooks.cli_tables import Column, fitted_table, make_console

console = make_console()


def unmatched(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    settings: SettingsOption = None,
) -> None:
    """Tracks your Subsonic server has no song for, and why."""
    run_client(ctx, settings, partial(show_unmatched, limit=limit))


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


def add_commands(cli: typer.Typer) -> None:
    cli.command()(unmatched)
