"""The `soundspan-host` command. Bad configuration ends it with one line and exit code 2."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer
from aiohttp import web

from soundspan_host.app import create_app, run_analysis_worker
from soundspan_host.errors import ConfigError
from soundspan_host.plugins import load_plugins
from soundspan_host.settings import HostSettings, read_settings

MAX_REQUEST_LINE = 64 * 1024

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
    asyncio.run(serve_until_stopped(create_app(plugins), host_settings.host, host_settings.port))


def configure_logging(settings: HostSettings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


async def serve_until_stopped(app: web.Application, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM, then always run the app's clean-up to its end.

    aiohttp's run_app cancels its main task on a signal, which can cut the clean-up short
    and leave the embedded PostgreSQL running; here nothing cancels the clean-up.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stop.set)
    # long request lines: a track path in a query string, percent-encoded, can pass 8 KiB
    runner = web.AppRunner(app, handle_signals=False, max_line_size=MAX_REQUEST_LINE)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        logging.getLogger("soundspan_host").info("serving on http://%s:%s", host, port)
        await stop.wait()
        logging.getLogger("soundspan_host").info("stopping")
    finally:
        await runner.cleanup()


@cli.command()
def worker(
    analyzer: Annotated[str, typer.Option(help="The analyzer to run, e.g. musicnn or clap.")],
    settings: SettingsOption = None,
) -> None:
    """Analyze from a host's queue on this machine (needs SOUNDSPAN_DATABASE_URL)."""
    plugins = load_plugins(read_settings(settings))
    configure_logging(plugins.settings.host)
    asyncio.run(until_stopped(run_analysis_worker(plugins, analyzer)))


async def until_stopped(work: Coroutine[Any, Any, None]) -> None:
    """Run `work` until SIGINT or SIGTERM, then cancel it and let its clean-up finish."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


@cli.command()
def scan(settings: SettingsOption = None) -> None:
    """Ask the running host to compare the music dir with its database now."""
    host_settings = load_plugins(read_settings(settings)).settings.host
    url = f"http://{host_settings.host}:{host_settings.port}/api/library/scan"
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, method="POST"), timeout=30
        ) as answer:
            outcome = json.load(answer)["scan"]
    except urllib.error.HTTPError as error:
        raise ConfigError(f"the host at {url} refused the scan: HTTP {error.code}") from None
    except OSError as error:
        raise ConfigError(
            f"no host answers at {url} ({error}); start it with `soundspan-host serve`, "
            "which also scans at start-up"
        ) from None
    typer.echo(f"scan {outcome}: the index follows in the background")


def main() -> None:
    """Console-script entry point."""
    try:
        cli(standalone_mode=True)
    except ConfigError as error:
        print(f"soundspan-host: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
