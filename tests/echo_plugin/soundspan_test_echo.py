"""A tiny third-party plugin the tests install through the `soundspan_host.plugins` entry point.

It owns a settings section, a table (by migration), a lifespan that touches the database,
a route, and a command (`soundspan-host echo`), so one plugin exercises every start-up hook.
"""

from contextlib import asynccontextmanager
from pathlib import Path

import typer
from aiohttp import web
from pydantic import Field
from sqlalchemy import text

from soundspan_hooks import HOST, PluginSettings, SettingsSection, hookimpl, legacy_env
from soundspan_hooks.cli import HostClient, SettingsOption, run_client
from soundspan_hooks.cli_tables import Column, fitted_table, make_console


class EchoSettings(PluginSettings):
    greeting: str = Field("hello", description="What GET /api/echo answers.")
    times: int = legacy_env("ECHO_TIMES", 1, "How often to repeat the greeting.", ge=1)
    events_file: str = Field("", description="Where to record start and stop, for the tests.")


routes = web.RouteTableDef()


@routes.get("/api/echo")
async def echo(request: web.Request) -> web.Response:
    host = request.app[HOST]
    settings = host.section("echo")
    async with host.engine.connect() as connection:
        starts = (await connection.execute(text("SELECT count(*) FROM echo_starts"))).scalar()
    return web.json_response({"echo": [settings.greeting] * settings.times, "starts": starts})


@hookimpl
def soundspan_settings():
    return SettingsSection("echo", EchoSettings)


@hookimpl
def soundspan_migrations():
    return Path(__file__).parent / "soundspan_test_echo_migrations"


@hookimpl
def soundspan_routes():
    return routes


@hookimpl
def soundspan_lifespan(host):
    return _lifespan(host)


@asynccontextmanager
async def _lifespan(host):
    events_file = host.section("echo").events_file
    async with host.engine.begin() as connection:
        await connection.execute(text("INSERT INTO echo_starts DEFAULT VALUES"))
    _record(events_file, "start")
    try:
        yield
    finally:
        _record(events_file, "stop")


def _record(events_file: str, event: str) -> None:
    if events_file:
        with open(events_file, "a") as events:
            events.write(event + "\n")


@hookimpl
def soundspan_commands(cli):
    @cli.command()
    def echo(ctx: typer.Context, settings: SettingsOption = None) -> None:
        """Print what GET /api/echo answers (the echo plugin)."""
        run_client(ctx, settings, print_echo)


async def print_echo(client: HostClient) -> None:
    answer = await client.get("/api/echo")
    console = make_console()
    rows = [(greeting,) for greeting in answer["echo"]]
    console.print(
        fitted_table(console, f"echo after {answer['starts']} starts", [Column("greeting")], rows)
    )
