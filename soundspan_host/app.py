"""The aiohttp application: its lifetime (database, then plugins) and the host's own routes."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pluggy
from aiohttp import web
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from soundspan_hooks import (
    HOST,
    Analyzer,
    AnalyzerInfo,
    PluginSettings,
    RefreshCoordinator,
    WorkerShare,
)
from soundspan_host import __version__
from soundspan_host.analysis_feed import DATABASE_ERRORS, AnalysisFeed
from soundspan_host.analyzers import provided_analyzers
from soundspan_host.api_token import api_token_file, required_api_token
from soundspan_host.catalog import Catalog
from soundspan_host.cpu_budget import CpuBudget, host_budget
from soundspan_host.database import open_database, reading
from soundspan_host.database.worker_role import grant_worker_access
from soundspan_host.errors import ConfigError
from soundspan_host.failures import OPENAPI as FAILURES_OPENAPI
from soundspan_host.failures import routes as failure_routes
from soundspan_host.metrics import METRICS, Metrics
from soundspan_host.metrics import OPENAPI as METRICS_OPENAPI
from soundspan_host.metrics import routes as metrics_routes
from soundspan_host.middlewares import bearer_token, check_exposure, json_errors
from soundspan_host.openapi import HOST_OPENAPI, build_spec
from soundspan_host.plugins import PLUGINS, Plugins
from soundspan_host.queue import AnalysisQueue
from soundspan_host.request_guards import (
    allow_cross_origin,
    allowed_host_names,
    json_bodies,
    known_hosts_only,
    same_origin_changes,
)
from soundspan_host.settings import HostSettings
from soundspan_host.status import OPENAPI as STATUS_OPENAPI
from soundspan_host.status import routes as status_routes

log = logging.getLogger(__name__)

# True for a host started to answer one CLI command where none runs (HostContext.one_command)
ONE_COMMAND = web.AppKey("soundspan_one_command", bool)
CATALOG_PLUGIN = "soundspan-catalog"
STARTING = ("downloading", "loading")  # an analyzer's states before its model is known to load
STARTED_POLL_SECONDS = 0.5
PURGE_SECONDS = 3600.0  # between purges of tracks missing past their grace period
routes = web.RouteTableDef()


@dataclass
class Host:
    """What plugins see of the host (soundspan_hooks.HostContext)."""

    plugins: Plugins
    engine: AsyncEngine
    reader: AsyncEngine
    music_dir: Path
    data_dir: Path
    app: web.Application
    catalog: Catalog | None = None  # the host's; a bare analysis worker has none
    one_command: bool = False
    analyzers: dict[str, Analyzer] = field(default_factory=dict)
    hook: pluggy.HookRelay = field(init=False)
    cpu_budget: CpuBudget = field(init=False)

    def __post_init__(self) -> None:
        self.hook = self.plugins.manager.hook
        self.cpu_budget = host_budget(self.plugins)

    def section(self, name: str) -> PluginSettings:
        return self.plugins.settings.section(name)

    def worker_share(self, analyzer: str, on_gpu: bool = False) -> WorkerShare:
        if self.one_command:  # no model loaded for a command that only reads
            return WorkerShare(0, "none: this host answers one command")
        return self.cpu_budget.share(analyzer, on_gpu)

    async def call(self, hook_name: str, **kwargs: Any) -> list[Any]:
        """Call a hook on every plugin and await whatever awaitables come back."""
        answers = getattr(self.hook, hook_name)(**kwargs)
        return [await answer if inspect.isawaitable(answer) else answer for answer in answers]

    async def tracks_on_record(self) -> dict[str, tuple[int, float]]:
        assert self.catalog is not None, "only a host keeps the catalogue"
        return await self.catalog.tracks_on_record()

    async def describe_analyzers(self) -> list[AnalyzerInfo]:
        return [analyzer.info() for analyzer in self.analyzers.values()]


def create_app(plugins: Plugins, one_command: bool = False) -> web.Application:
    """Build the app: host routes, plugin routes, and one lifetime for database and plugins.

    `one_command`: a host for one CLI command where none runs; the queue (re-analysis of a
    changed model included), analysis and ingest stay the running host's.
    """
    settings = plugins.settings.host
    check_exposure(settings.host, settings.api_token)
    metrics = Metrics()
    middlewares = [metrics.middleware(), json_errors()]
    allowed_hosts = allowed_host_names(settings)
    if allowed_hosts is not None:
        middlewares.append(known_hosts_only(allowed_hosts))
    middlewares.append(same_origin_changes(settings.cors_origins))
    if token := required_api_token(settings):
        middlewares.append(bearer_token(token))
        if not settings.api_token:
            log.info(
                "the API asks for the token in %s (the CLI reads it; the status page asks "
                "for it once)",
                api_token_file(settings.data_dir),
            )
    middlewares.append(json_bodies(settings.http_body_timeout))
    app = web.Application(client_max_size=1024**2, middlewares=middlewares)
    app[PLUGINS] = plugins
    app[ONE_COMMAND] = one_command
    app[METRICS] = metrics
    app.add_routes([*routes, *failure_routes, *metrics_routes, *status_routes])
    for plugin_routes in plugins.manager.hook.soundspan_routes():
        if plugin_routes is not None:
            app.add_routes(plugin_routes)
    if settings.cors_origins:
        allow_cross_origin(app, settings.cors_origins)
    app.cleanup_ctx.append(host_lifetime)
    return app


async def host_lifetime(app: web.Application) -> AsyncIterator[None]:
    """Start the database, then each plugin; stop them in reverse, however the host stops."""
    plugins = app[PLUGINS]
    async with AsyncExitStack() as stack:
        host = await open_host(stack, app, plugins, plugin_migrations(plugins))
        host.analyzers = {
            name: provided.analyzer for name, provided in provided_analyzers(plugins, host).items()
        }
        log.info("CPU budget: %s", host.cpu_budget.describe())
        analyzers = await host.describe_analyzers()
        queue = AnalysisQueue(host.engine, plugins.settings.host.queue_policy)
        feeds: list[AnalysisFeed] = []
        host.catalog = Catalog(
            host.engine,
            {analyzer.name: analyzer.version for analyzer in analyzers},
            jobs_added=lambda: [feed.jobs_added() for feed in feeds],
        )
        plugins.manager.register(host.catalog, name=CATALOG_PLUGIN)
        stack.callback(plugins.manager.unregister, name=CATALOG_PLUGIN)
        await start_plugins(stack, host)
        analyzers = await host.describe_analyzers()
        await grant_worker_access(host.engine, [analyzer.name for analyzer in analyzers])
        # a host for one command leaves the queue and its analysis to the running host
        working = [] if host.one_command else analyzers
        await queue_reanalysis(queue, [info for info in working if info.state not in STARTING])
        for info in working:
            if info.state == "unavailable":
                log.warning("%s is unavailable: %s", info.name, info.reason)
                continue
            if info.workers == 0:
                log.info("%s: no local workers; analysis is left to remote ones", info.name)
                continue
            feeds.append(AnalysisFeed(host, queue, host.analyzers[info.name], app[METRICS]))
        background = [asyncio.create_task(feed.run()) for feed in feeds]
        background += [
            asyncio.create_task(queue_reanalysis_once_started(queue, host.analyzers[info.name]))
            for info in working
            if info.state in STARTING
        ]
        stack.push_async_callback(stop_tasks, background)
        purge = missing_tracks_purge(host.catalog, plugins.settings.host)
        purge.start()
        stack.push_async_callback(purge.stop)
        log.info(
            "soundspan host %s ready; plugins: %s",
            __version__,
            ", ".join(plugin.name for plugin in plugins.enabled) or "none",
        )
        yield


async def run_analysis_worker(plugins: Plugins, analyzer_name: str) -> None:
    """Analyze from the shared queue with one analyzer and nothing else, until cancelled.

    For extra machines (or processes) beside a host: no HTTP, no watcher, the same database.
    """
    if plugins.settings.host.database_url is None:
        raise ConfigError(
            "a worker needs SOUNDSPAN_DATABASE_URL: the database of the host it works for"
        )
    # every enabled plugin's migrations: the host's database has their branches too
    migrations = plugin_migrations(plugins)
    async with AsyncExitStack() as stack:
        host = await open_host(stack, web.Application(), plugins, migrations, migrate=False)
        provided = provided_analyzers(plugins, host)
        if analyzer_name not in provided:
            raise ConfigError(
                f"no enabled plugin provides an analyzer called {analyzer_name!r} to work as;"
                f" the enabled ones: {', '.join(sorted(provided)) or 'none'}"
            )
        # the plugin providing it, and nothing else: no API, no watcher, no other analyzer
        for name, _ in plugins.manager.list_name_plugin():
            if name != provided[analyzer_name].plugin:
                plugins.manager.unregister(name=name)
        host.analyzers = {analyzer_name: provided[analyzer_name].analyzer}
        host.cpu_budget = host_budget(plugins)
        log.info("CPU budget: %s", host.cpu_budget.describe())
        await start_plugins(stack, host)
        analyzer = host.analyzers[analyzer_name]
        info = analyzer.info()
        if info.state == "unavailable":
            raise ConfigError(f"cannot work as {analyzer_name!r}: {info.reason}")
        if info.workers == 0:
            raise ConfigError(f"[{analyzer_name}] workers = 0 leaves this worker nothing to do")
        queue = AnalysisQueue(host.engine, plugins.settings.host.queue_policy)
        log.info("worker %s analyzing with %s", queue.owner, analyzer_name)
        await AnalysisFeed(host, queue, analyzer, Metrics()).run()  # no /metrics here


async def open_host(
    stack: AsyncExitStack,
    app: web.Application,
    plugins: Plugins,
    migrations: list[Path],
    migrate: bool = True,
) -> Host:
    """Check the music dir, open (and migrate) the database, and make the plugins' Host.

    `migrations` are every enabled plugin's, even where this process runs only one of them:
    the database holds all their branches. A worker (`migrate` false) waits for them instead:
    its role may not change the schema."""
    settings = plugins.settings.host
    music_dir = settings.music_dir.resolve()
    if not music_dir.is_dir():
        raise ConfigError(
            f"music dir {music_dir} does not exist; create it or set SOUNDSPAN_MUSIC_DIR"
        )
    engine = await stack.enter_async_context(
        open_database(
            settings.database_url,
            settings.data_dir,
            embedded_port=settings.embedded_database_port,
            embedded_shared_buffers_mb=settings.embedded_database_shared_buffers_mb,
            plugin_migrations=migrations,
            migrate=migrate,
        )
    )
    host = Host(
        plugins=plugins,
        engine=engine,
        reader=await stack.enter_async_context(reading(engine)),
        music_dir=music_dir,
        data_dir=settings.data_dir,
        app=app,
        one_command=app.get(ONE_COMMAND, False),
    )
    app[HOST] = host
    return host


async def queue_reanalysis_once_started(queue: AnalysisQueue, analyzer: Analyzer) -> None:
    """queue_reanalysis for an analyzer still downloading or loading its model, once it is
    ready (in the background: the host answers meanwhile). Its version means something only
    once the model loads; unavailable on the way (a download retrying) it may still come."""
    while (info := analyzer.info()).state != "ready":
        await asyncio.sleep(STARTED_POLL_SECONDS)
    try:
        await queue_reanalysis(queue, [info])
    except DATABASE_ERRORS as error:  # the next start tries again
        log.warning("%s: could not queue re-analysis for its new model (%s)", info.name, error)


async def queue_reanalysis(queue: AnalysisQueue, analyzers: list[AnalyzerInfo]) -> None:
    """Queue re-analysis for the analyzers whose model changed since their results were made.

    Never for an unavailable analyzer: the version it reports (e.g. a missing checkpoint's)
    says nothing about the model its results came from.
    """
    available = {info.name: info.version for info in analyzers if info.state != "unavailable"}
    for analyzer, (jobs, older) in (await queue.requeue_outdated(available)).items():
        if jobs:
            log.warning(
                "%s: %d tracks queued for analysis with %s (%s)",
                analyzer,
                jobs,
                available[analyzer],
                f"results from {', '.join(older)} are replaced as the new ones come"
                if older
                else "they had none from it",
            )


def plugin_migrations(plugins: Plugins) -> list[Path]:
    return [path for path in plugins.manager.hook.soundspan_migrations() if path]


async def start_plugins(stack: AsyncExitStack, host: Host) -> None:
    """Enter each plugin's lifespan; the stack exits them in reverse order."""
    for lifespan in host.plugins.manager.hook.soundspan_lifespan(host=host):
        if lifespan is not None:
            await stack.enter_async_context(lifespan)


def missing_tracks_purge(catalog: Catalog, settings: HostSettings) -> RefreshCoordinator[int]:
    """Forgets tracks whose files have been gone longer than the grace period: at start, then
    hourly (an hour after a failure too)."""
    grace = timedelta(days=settings.missing_track_grace_days)

    async def purge() -> int:
        if purged := await catalog.purge_missing(grace):
            log.info("forgot %d tracks missing for over %s", purged, grace)
        return purged

    def failed(error: Exception, retry_in: float) -> str:
        if isinstance(error, DATABASE_ERRORS):
            log.warning("could not purge missing tracks: %s", error)
        else:  # ours to fix
            log.error("could not purge missing tracks", exc_info=error)
        return str(error) or type(error).__name__

    return RefreshCoordinator(
        "purge of missing tracks",
        purge,
        logger=log,
        interval=PURGE_SECONDS,
        retry=PURGE_SECONDS,
        failed=failed,
    )


async def stop_tasks(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """Liveness for people and orchestrators: 200 when the database answers, else 503.

    Open to anyone, so it says no more than that: the version is in /api/plugins, the
    database's error in the host's log."""
    try:
        async with request.app[HOST].engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except (OSError, SQLAlchemyError) as error:
        log.warning("/healthz: the database does not answer: %s", str(error).splitlines()[0])
        return web.json_response({"status": "unavailable", "database": "unavailable"}, status=503)
    return web.json_response({"status": "ok", "database": "ok"})


@routes.get("/api/openapi.json")
async def openapi_document(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 description of every route the enabled plugins serve."""
    manager = request.app[PLUGINS].manager
    own = [HOST_OPENAPI, FAILURES_OPENAPI, METRICS_OPENAPI, STATUS_OPENAPI]
    fragments = [*own, *(answer for answer in manager.hook.soundspan_openapi() if answer)]
    return web.json_response(build_spec(fragments))


@routes.get("/api/plugins")
async def list_plugins(request: web.Request) -> web.Response:
    """The plugins this host knows, which are enabled, and the status page panels each feeds."""
    plugins = request.app[PLUGINS]
    panels = {
        impl.plugin_name: [asdict(panel) for panel in impl.function() or ()]
        for impl in plugins.manager.hook.soundspan_status_panels.get_hookimpls()
    }
    return web.json_response(
        {
            "plugins": [
                {
                    "name": plugin.name,
                    "version": plugin.version,
                    "builtin": plugin.builtin,
                    "enabled": plugin.enabled,
                    "panels": panels.get(plugin.name, []),
                }
                for plugin in plugins.known
            ]
        }
    )
