"""How the CLI reaches the index: the running host's API, or, where no host answers, a
private host on the same database (no ingest, no analysis) started for one command."""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from soundspan_host.api_token import required_api_token
from soundspan_host.errors import ConfigError
from soundspan_host.listener_owner import listener_uids
from soundspan_host.plugins import Plugins, load_plugins
from soundspan_host.settings import HostSettings, env_name, read_settings


class ApiError(Exception):
    """The host answered with an error; its message is meant for people."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{message} (HTTP {status})")
        self.status = status


@dataclasses.dataclass
class HostClient:
    session: aiohttp.ClientSession
    base_url: str
    private: bool  # True: no host was running; this command started its own
    settings: HostSettings  # as this command read them (its music dir, say)

    async def get(self, route: str, **params: Any) -> Any:
        query = {key: str(value) for key, value in params.items() if value is not None}
        async with self.session.get(self.base_url + route, params=query) as answer:
            return await _json(answer)

    async def post(self, route: str, body: dict[str, Any]) -> Any:
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
async def connect(
    plugins: Plugins, settings_file: Path | None, start_private: bool = True
) -> AsyncIterator[HostClient]:
    """A client of the running host; else, with start_private, of a private one.

    `plugins` are those loaded from `settings_file`, which a private host reads again."""
    # a private host started below makes the data dir's token if there is none yet
    token = required_api_token(plugins.settings.host, create=start_private)
    url = api_url(plugins)
    if token:
        refuse_a_stranger_listening_at(url)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = aiohttp.ClientTimeout(total=120, sock_connect=3)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        try:
            async with session.get(url + "/healthz") as answer:
                await answer.read()
            yield HostClient(session, url, private=False, settings=plugins.settings.host)
            return
        except aiohttp.ClientConnectionError:
            if not start_private:
                raise ConfigError(
                    f"no host answers at {url}; start it with `soundspan-host serve`"
                ) from None
        async with private_host(plugins, settings_file) as private_url:
            yield HostClient(session, private_url, private=True, settings=plugins.settings.host)


@contextlib.asynccontextmanager
async def private_host(plugins: Plugins, settings_file: Path | None) -> AsyncIterator[str]:
    """The host's app on a free loopback port, with ingest off and no analysis workers.

    They are switched off through the environment, which beats both settings.toml and the
    older variable names.
    """
    os.environ.update(_background_work_off(plugins))
    plugins = load_plugins(read_settings(settings_file))
    # imported here: the app pulls in every plugin's routes, which a plain client never needs
    from soundspan_host.app import create_app

    # the real host queues re-analysis at its start, with its own environment's models
    runner = web.AppRunner(create_app(plugins, requeue_outdated=False), handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def _background_work_off(plugins: Plugins) -> dict[str, str]:
    sections = plugins.settings.sections
    overrides = {env_name("enabled", "watcher"): "false"} if "watcher" in sections else {}
    for name, section in sections.items():
        if "workers" in type(section).model_fields:
            overrides[env_name("workers", name)] = "0"
    return overrides
