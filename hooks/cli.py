"""What a command of `soundspan-host` needs to reach the host, the host's and the plugins' alike.

A plugin adds commands in `soundspan_commands(cli)`; each hands its work to `run_client`, which
gives it a HostClient of the running host (or, where none runs, of a private host on the same
database), and prints with `soundspan_hooks.cli_tables`, as the host's commands do:

    @hookimpl
    def soundspan_commands(cli):
        @cli.command()
        def hello(ctx: typer.Context, settings: SettingsOption = None) -> None:
            "Say what GET /api/hello answers."  # the command's help
            run_client(ctx, settings, say_hello)  # async def say_hello(client: HostClient)

Loaded by commands only: an analysis worker never imports typer or rich.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Protocol

import aiohttp
import typer

SettingsOption = Annotated[
    Path | None,
    typer.Option("--settings", help="settings.toml to read (default: ./settings.toml)."),
]
"""Every command's `--settings`; give it to run_client as it came."""


class ApiError(Exception):
    """The host answered with an error; its message is meant for people."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{message} (HTTP {status})")
        self.status = status


@dataclasses.dataclass
class HostClient:
    """The host's JSON API, as one command reaches it."""

    session: aiohttp.ClientSession
    base_url: str
    private: bool  # True: no host was running; this command started its own
    music_dir: Path | None  # as this command's settings say: a path given here is under it

    async def get(self, route: str, **params: Any) -> Any:
        """GET `route`; params that are None are left out. Raises ApiError on an error."""
        query = {key: str(value) for key, value in params.items() if value is not None}
        async with self.session.get(self.base_url + route, params=query) as answer:
            return await _json(answer)

    async def post(self, route: str, body: dict[str, Any]) -> Any:
        """POST a JSON body to `route`. Raises ApiError on an error."""
        async with self.session.post(self.base_url + route, json=body) as answer:
            return await _json(answer)


async def _json(answer: aiohttp.ClientResponse) -> Any:
    try:
        body = await answer.json(content_type=None)
    except ValueError:
        body = None
    if answer.status >= 400:
        message = body["error"]["message"] if isinstance(body, dict) else answer.reason
        raise ApiError(answer.status, message)
    return body


ClientCommand = Callable[[HostClient], Awaitable[None]]


class ClientRunner(Protocol):
    """How the host runs a ClientCommand (settings, connection, errors): see run_client."""

    def __call__(
        self, settings: Path | None, command: ClientCommand, start_private: bool
    ) -> None: ...


CLIENT_RUNNER = "soundspan_hooks.cli.client_runner"
"""The key of the host's ClientRunner in the command context's `meta`, set before any command
runs (a command gets its context by declaring a `typer.Context` parameter)."""


def run_client(
    ctx: typer.Context, settings: Path | None, command: ClientCommand, start_private: bool = True
) -> None:
    """Run `command` with a client of the running host; where none runs, of a private one on
    its database (no ingest, no analysis), unless `start_private` is False. An error answer
    ends the command with its message and exit code 1, bad settings with exit code 2."""
    runner: ClientRunner = ctx.meta[CLIENT_RUNNER]
    runner(settings, command, start_private)
