"""The clap plugin's hooks: what the host registers (see __init__.py for the plugin)."""

from __future__ import annotations

from pathlib import Path

from soundspan_hooks import Check, HostContext, SettingsSection, hookimpl
from soundspan_plugins.clap.analyzer import ClapAnalyzer
from soundspan_plugins.clap.runtime import running
from soundspan_plugins.clap.settings import NAME, ClapSettings


@hookimpl
def soundspan_settings() -> SettingsSection:
    return SettingsSection(NAME, ClapSettings)


@hookimpl
def soundspan_migrations() -> Path:
    return Path(__file__).parent / "migrations"


@hookimpl
def soundspan_analyzers(host: HostContext) -> list[ClapAnalyzer]:
    return [ClapAnalyzer(host)]


@hookimpl
def soundspan_lifespan(host: HostContext):
    return running(host)


@hookimpl
def soundspan_doctor(sections, music_dir, data_dir) -> list[Check]:
    """Loads the text tower as the host would, so the answer is the host's own."""
    from soundspan_plugins.clap.doctor import doctor_checks

    return doctor_checks(sections, data_dir)
