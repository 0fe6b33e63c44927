"""A no-op analyzer for the ingest benchmark, installed by entry point like any third-party plugin.

Every job it is handed completes at once and stores nothing, so a benchmark that uses it
measures the host alone: watcher, catalogue, queue and the database, not a model.
"""

from pydantic import Field

from soundspan_hooks import AnalyzerInfo, PluginSettings, SettingsSection, hookimpl


class NoopSettings(PluginSettings):
    workers: int = Field(4, ge=0, description="Jobs in flight at once.")
    poll_interval: float = Field(
        5.0, gt=0, description="Queue poll interval (new files wake the worker sooner)."
    )


@hookimpl
def soundspan_settings():
    return SettingsSection("noop", NoopSettings)


@hookimpl
def soundspan_analyzer(host):
    settings = host.section("noop")
    return AnalyzerInfo(
        name="noop",
        version="1",
        model_id="noop",
        trained=False,
        dimension=1,
        device="cpu",
        workers=settings.workers,
        poll_interval=settings.poll_interval,
    )


@hookimpl
def soundspan_analyze_track(host, analyzer, track):
    if analyzer != "noop":
        return None
    return _analyze()


async def _analyze():
    async def store(connection):
        """Store nothing: the host marks the job done in this same transaction."""

    return store
