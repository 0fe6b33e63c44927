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
def soundspan_analyzers(host):
    return [NoopAnalyzer(host)]


class NoopAnalyzer:
    name = "noop"

    def __init__(self, host):
        self.host = host

    def info(self):
        settings = self.host.section("noop")
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

    async def details(self, content_id):
        return None

    async def analyze(self, track):
        async def store(connection):
            """Store nothing: the host marks the job done in this same transaction."""

        return store
