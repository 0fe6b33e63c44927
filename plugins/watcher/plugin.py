"""The watcher plugin's hooks: what the host registers (see __init__.py for the plugin)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from soundspan_hooks import Check, HostContext, SettingsSection, hookimpl
from soundspan_plugins.watcher.api import INGEST, openapi_fragment, routes
from soundspan_plugins.watcher.doctor import inotify_checks
from soundspan_plugins.watcher.ingest import Ingest
from soundspan_plugins.watcher.settings import NAME, WatcherSettings


@hookimpl
def soundspan_settings() -> SettingsSection:
    return SettingsSection(NAME, WatcherSettings)


@hookimpl
def soundspan_doctor(sections, music_dir, data_dir) -> list[Check]:
    """inotify needs one watch per folder; a big library can pass the system's limit."""
    return inotify_checks(sections, music_dir)


@hookimpl
def soundspan_openapi() -> dict:
    return openapi_fragment()


@hookimpl
def soundspan_routes() -> web.RouteTableDef:
    return routes


@hookimpl
def soundspan_lifespan(host: HostContext):
    return _watching(host)


@asynccontextmanager
async def _watching(host: HostContext) -> AsyncIterator[None]:
    if host.one_command:  # the running host follows the music dir, and scans on request
        yield
        return
    settings = host.section(NAME)
    assert isinstance(settings, WatcherSettings)
    ingest = Ingest(host, settings)
    host.app[INGEST] = ingest
    await ingest.start(reconcile=settings.reconcile_on_start)
    try:
        yield
    finally:
        await ingest.stop()


@hookimpl
def soundspan_commands(cli) -> None:
    from soundspan_plugins.watcher.commands import add_commands  # typer and rich: CLI only

    add_commands(cli)
