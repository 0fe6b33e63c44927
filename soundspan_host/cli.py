"""The `soundspan-host` command: the host's own commands, and those the enabled plugins add
(soundspan_commands). Bad configuration ends it with one line and exit code 2."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.text import Text
from typer.main import get_command_name

from soundspan_hooks.cli import (
    CLIENT_RUNNER,
    ApiError,
    ClientCommand,
    HostClient,
    SettingsOption,
    run_client,
)
from soundspan_hooks.cli_tables import Column, fitted_table, make_console
from soundspan_host.app import create_app, run_analysis_worker
from soundspan_host.cli_tables import status_view
from soundspan_host.client import connect
from soundspan_host.doctor import run_checks
from soundspan_host.errors import ConfigError
from soundspan_host.plugins import load_plugins
from soundspan_host.serving import configure_logging, serve_until_stopped, until_stopped
from soundspan_host.settings import read_settings

console = make_console()
error_console = make_console(stderr=True)


def default(ctx: typer.Context, settings: SettingsOption = None) -> None:
    """Serve (the default when no command is given)."""
    ctx.meta[CLIENT_RUNNER] = run_host_client
    if ctx.invoked_subcommand is None:
        serve(settings)


def serve(settings: SettingsOption = None) -> None:
    """Start the host: database, plugins and the HTTP API, until Ctrl-C or SIGTERM."""
    plugins = load_plugins(read_settings(settings))
    host_settings = plugins.settings.host
    configure_logging(host_settings)
    asyncio.run(serve_until_stopped(create_app(plugins), host_settings))


def worker(
    analyzer: Annotated[str, typer.Option(help="The analyzer to run, e.g. musicnn or clap.")],
    settings: SettingsOption = None,
) -> None:
    """Analyze from a host's queue on this machine (needs SOUNDSPAN_DATABASE_URL)."""
    plugins = load_plugins(read_settings(settings))
    configure_logging(plugins.settings.host)
    asyncio.run(until_stopped(run_analysis_worker(plugins, analyzer)))


def status(ctx: typer.Context, settings: SettingsOption = None) -> None:
    """Analyzers, their models and progress, and the library's size."""
    run_client(ctx, settings, show_status)


async def show_status(client: HostClient) -> None:
    for part in status_view(console, await client.get("/api/analysis/status")):
        console.print(part)


def failed(
    ctx: typer.Context,
    retry: Annotated[bool, typer.Option("--retry", help="Queue them all again.")] = False,
    analyzer: Annotated[str | None, typer.Option(help="Only this analyzer's.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    settings: SettingsOption = None,
) -> None:
    """Files whose analysis failed, and why."""
    run_client(ctx, settings, partial(show_failed, retry=retry, analyzer=analyzer, limit=limit))


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


HOST_COMMANDS = (serve, worker, status, failed, doctor)


def run_host_client(settings: Path | None, command: ClientCommand, start_private: bool) -> None:
    """What soundspan_hooks.cli.run_client does here: the command against the running host
    (else a private one); an error answer ends it with its message, exit 1."""

    plugins = load_plugins(read_settings(settings))

    async def main() -> None:
        async with connect(plugins, start_private=start_private) as client:
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


def command_line(arguments: list[str]) -> typer.Typer:
    """The host's commands and the enabled plugins' (read from the settings the `arguments`
    name). Where the settings are bad, the host's commands run alone (doctor says what is
    wrong; --help still helps), and naming another command ends with the settings' error."""
    cli = typer.Typer(
        help="Keeps a neural vibe index of a music folder and serves it over REST.",
        no_args_is_help=False,
        add_completion=False,
    )
    cli.callback(invoke_without_command=True)(default)
    for command in HOST_COMMANDS:
        cli.command()(command)
    try:
        plugins = load_plugins(read_settings(settings_named(arguments)))
    except ConfigError:
        if command_named(arguments) in (None, *map(_name, HOST_COMMANDS)):
            return cli
        raise
    for impl in plugins.manager.hook.soundspan_commands.get_hookimpls():
        known = len(cli.registered_commands)
        impl.function(**{name: cli for name in impl.argnames})  # (cli) or ()
        for info in cli.registered_commands[known:]:  # --help says whose they are
            info.rich_help_panel = info.rich_help_panel or f"{impl.plugin_name} plugin"
    names = Counter(info.name or _name(info.callback) for info in cli.registered_commands)
    for name, count in names.items():
        if count > 1:
            raise ConfigError(
                f"two commands are called {name!r} ({', '.join(_adders(cli, name))}): switch"
                " off one of the plugins that add it (`enabled = false` in its section)"
            )
    return cli


def _name(command: Callable[..., object]) -> str:
    return get_command_name(command.__name__)


def _adders(cli: typer.Typer, name: str) -> list[str]:
    """The modules of the commands called `name`."""
    return [
        info.callback.__module__
        for info in cli.registered_commands
        if (info.name or _name(info.callback)) == name
    ]


def settings_named(arguments: list[str]) -> Path | None:
    """The file a `--settings` option names, wherever it stands."""
    for index, argument in enumerate(arguments):
        if argument.startswith("--settings="):
            return Path(argument.split("=", 1)[1])
        if argument == "--settings" and index + 1 < len(arguments):
            return Path(arguments[index + 1])
    return None


def command_named(arguments: list[str]) -> str | None:
    """The command the arguments name: the first word that is no option nor a value of one."""
    words = iter(arguments)
    for word in words:
        if word == "--settings":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def main() -> None:
    """The command line (the `soundspan-host` script calls it through __main__.py)."""
    try:
        command_line(sys.argv[1:])(standalone_mode=True)
    except ConfigError as error:
        print(f"soundspan-host: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
