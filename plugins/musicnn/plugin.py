"""The musicnn plugin's hooks: what the host registers (see __init__.py for the plugin)."""

from __future__ import annotations

from pathlib import Path

from soundspan_hooks import Check, HostContext, SettingsSection, hookimpl
from soundspan_plugins.musicnn.analyzer import MusicnnAnalyzer
from soundspan_plugins.musicnn.doctor import doctor_checks
from soundspan_plugins.musicnn.runtime import running
from soundspan_plugins.musicnn.settings import NAME, MusicnnSettings


@hookimpl
def soundspan_settings() -> SettingsSection:
    return SettingsSection(NAME, MusicnnSettings)


@hookimpl
def soundspan_migrations() -> Path:
    return Path(__file__).parent / "migrations"


@hookimpl
def soundspan_analyzers(host: HostContext) -> list[MusicnnAnalyzer]:
    return [MusicnnAnalyzer(host)]


@hookimpl
def soundspan_lifespan(host: HostContext):
    return running(host)


@hookimpl
def soundspan_doctor(sections, music_dir, data_dir) -> list[Check]:
    return doctor_checks(sections)
