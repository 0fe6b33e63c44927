"""How the CLI reaches the index: the running host's API, or, where no host answers, a
private host on the same database (no ingest, no analysis) started for one command."""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from yarl import URL

from soundspan_hooks.cli import HostClient
from soundspan_host.api_token import required_api_token
from soundspan_host.errors import ConfigError
from soundspan_host.listener_owner import listener_uids
from soundspan_host.plugins import Plugins


def api_url(plugins: Plugins) -> str:
    """Where the configured host listens, as a client on this machine reaches it."""
    settings = plugins.settings.host
    address = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(
        settings.host, settings.host
    )
    if ":" in address:
        address = f"[{address}]"
    return f"http://{address}:{settings.port}"


def refuse_a_stranger_listening_at(url: str) -> None:
    """Refuse to send the token to this machine's port when another account listens on it:
    a process that took the port before the host would be handed the token."""
    parsed = URL(url)
    try:
        loopback = ipaddress.ip_address(parsed.host or "").is_loopback
    except ValueError:
        loopback = parsed.host == "localhost"
    if not loopback or parsed.port is None:
        return
    address = "127.0.0.1" if parsed.host == "localhost" else parsed.host
    strangers = (listener_uids(address, parsed.port) or set()) - {os.geteuid(), 0}
    if strangers:
        raise ConfigError(
            f"{url} is served by another account (uid {', '.join(map(str, sorted(strangers)))}),"
            " not by a host of yours or root's: the API token is not sent to it. Stop that "
            "process, or set SOUNDSPAN_PORT to your host's port"
        )


@contextlib.asynccontextmanager
async def connect(plugins: Plugins, start_private: bool = True) -> AsyncIterator[HostClient]:
    """A client of the running host; else, with start_private, of a private one."""
    # a private host started below makes the data dir's token if there is none yet
    token = required_api_token(plugins.settings.host, create=start_private)
    url, music_dir = api_url(plugins), plugins.settings.host.music_dir
    if token:
        refuse_a_stranger_listening_at(url)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = aiohttp.ClientTimeout(total=120, sock_connect=3)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        try:
            async with session.get(url + "/healthz") as answer:
                await answer.read()
            yield HostClient(session, url, private=False, music_dir=music_dir)
            return
        except aiohttp.ClientConnectionError:
            if not start_private:
                raise ConfigError(
                    f"no host answers at {url}; start it with `soundspan-host serve`"
                ) from None
        async with private_host(plugins) as private_url:
            yield HostClient(session, private_url, private=True, music_dir=music_dir)


@contextlib.asynccontextmanager
async def private_host(plugins: Plugins) -> AsyncIterator[str]:
    """The host's app on a free loopback port, for one command: ingest, analysis and the
    queue stay the running host's (HostContext.one_command)."""
    # imported here: the app pulls in every plugin's routes, which a plain client never needs
    from soundspan_host.app import create_app

    runner = web.AppRunner(create_app(plugins, one_command=True), handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()
