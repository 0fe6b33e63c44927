"""The aiohttp application: its lifetime (database, then plugins) and the host's own routes."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy
from aiohttp import web
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from soundspan_hooks import HOST, PluginSettings
from soundspan_host import __version__
from soundspan_host.database import open_database
from soundspan_host.errors import ConfigError
from soundspan_host.plugins import Plugins

log = logging.getLogger(__name__)

PLUGINS = web.AppKey("soundspan_plugins", Plugins)
routes = web.RouteTableDef()


@dataclass
class Host:
    """What plugins see of the host (soundspan_hooks.HostContext)."""

    plugins: Plugins
    engine: AsyncEngine
    music_dir: Path
    data_dir: Path
    hook: pluggy.HookRelay = field(init=False)

    def __post_init__(self) -> None:
        self.hook = self.plugins.manager.hook

    def section(self, name: str) -> PluginSettings:
        return self.plugins.settings.section(name)

    async def call(self, hook_name: str, **kwargs: Any) -> list[Any]:
        """Call a hook on every plugin and await whatever awaitables come back."""
        answers = getattr(self.hook, hook_name)(**kwargs)
        return [await answer if inspect.isawaitable(answer) else answer for answer in answers]


def create_app(plugins: Plugins) -> web.Application:
    """Build the app: host routes, plugin routes, and one lifetime for database and plugins."""
    app = web.Application(client_max_size=1024**2)
    app[PLUGINS] = plugins
    app.add_routes(routes)
    for plugin_routes in plugins.manager.hook.soundspan_routes():
        if plugin_routes is not None:
            app.add_routes(plugin_routes)
    app.cleanup_ctx.append(host_lifetime)
    return app


async def host_lifetime(app: web.Application) -> AsyncIterator[None]:
    """Start the database, then each plugin; stop them in reverse, however the host stops."""
    plugins = app[PLUGINS]
    settings = plugins.settings.host
    music_dir = settings.music_dir.resolve()
    if not music_dir.is_dir():
        raise ConfigError(
            f"music dir {music_dir} does not exist; create it or set SOUNDSPAN_MUSIC_DIR"
        )
    migrations = [path for path in plugins.manager.hook.soundspan_migrations() if path]
    async with AsyncExitStack() as stack:
        engine = await stack.enter_async_context(
            open_database(
                settings.database_url,
                settings.data_dir,
                embedded_port=settings.embedded_database_port,
                plugin_migrations=migrations,
            )
        )
        host = Host(plugins=plugins, engine=engine, music_dir=music_dir, data_dir=settings.data_dir)
        app[HOST] = host
        for lifespan in plugins.manager.hook.soundspan_lifespan(host=host):
            if lifespan is not None:
                await stack.enter_async_context(lifespan)
        log.info(
            "soundspan host %s ready; plugins: %s",
            __version__,
            ", ".join(plugin.name for plugin in plugins.enabled) or "none",
        )
        yield


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """Liveness for people and orchestrators: 200 when the database answers, else 503."""
    try:
        async with request.app[HOST].engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except (OSError, SQLAlchemyError) as error:
        return web.json_response(
            {"status": "unavailable", "database": str(error).splitlines()[0]}, status=503
        )
    return web.json_response({"status": "ok", "database": "ok", "version": __version__})


@routes.get("/api/plugins")
async def list_plugins(request: web.Request) -> web.Response:
    """The plugins this host knows, and which are enabled."""
    return web.json_response(
        {
            "plugins": [
                {
                    "name": plugin.name,
                    "version": plugin.version,
                    "builtin": plugin.builtin,
                    "enabled": plugin.enabled,
                }
                for plugin in request.app[PLUGINS].known
            ]
        }
    )
