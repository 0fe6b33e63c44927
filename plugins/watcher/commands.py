"""`soundspan-host scan`: the running host compares the music dir with its database now."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Annotated

import typer
from rich.progress import TaskID

from soundspan_hooks.cli import HostClient, SettingsOption, run_client
from soundspan_hooks.cli_tables import make_console, progress_bars, progress_fields

console = make_console()


def scan(
    ctx: typer.Context,
    wait: Annotated[
        bool, typer.Option("--wait", help="Show progress until every analyzer has caught up.")
    ] = False,
    settings: SettingsOption = None,
) -> None:
    """Ask the running host to compare the music dir with its database now."""
    # the running host scans: a private one, started for one command, never does
    run_client(ctx, settings, partial(scan_library, wait=wait), start_private=False)


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
            status = await client.get("/api/analysis/status")
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


def add_commands(cli: typer.Typer) -> None:
    cli.command()(scan)
