"""Shared fixtures: one real embedded PostgreSQL for the session, a fresh database per test."""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from soundspan_host.database.embedded import EmbeddedPostgres
from soundspan_host.plugins import load_plugins
from soundspan_host.settings import read_settings

ECHO_PLUGIN = Path(__file__).parent / "echo_plugin"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No SOUNDSPAN_* or seed variables leak in from the machine, and no stray settings.toml."""
    for name in list(os.environ):
        if name.startswith(("SOUNDSPAN_", "CLAP_", "MUSICNN_", "ECHO_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path_factory.mktemp("session-db"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def database_url(postgres_server: EmbeddedPostgres) -> str:
    """A URL to a new, empty database on the session's server, dropped after the test."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin_dsn = f"postgresql://postgres@127.0.0.1:{postgres_server.port}/postgres"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    yield f"postgresql://postgres@127.0.0.1:{postgres_server.port}/{name}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
def echo_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Install the echo plugin as a real distribution with an entry point; returns its site dir."""
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(ECHO_PLUGIN / "soundspan_test_echo.py", site)
    shutil.copytree(ECHO_PLUGIN / "migrations", site / "soundspan_test_echo_migrations")
    dist_info = site / "soundspan_test_echo-1.2.3.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: soundspan-test-echo\nVersion: 1.2.3\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "[soundspan_host.plugins]\necho = soundspan_test_echo\n"
    )
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("soundspan_test_echo", None)


@pytest.fixture
def music_dir(tmp_path: Path) -> Path:
    path = tmp_path / "music"
    path.mkdir()
    return path


@pytest.fixture
def write_settings(tmp_path: Path, music_dir: Path, database_url: str):
    """Write a settings.toml for a host on the test database; returns a loader of its plugins."""

    def write(extra: str = ""):
        settings_file = tmp_path / "settings.toml"
        settings_file.write_text(
            f'music_dir = "{music_dir}"\n'
            f'data_dir = "{tmp_path / "data"}"\n'
            f'database_url = "{database_url}"\n' + extra
        )
        return load_plugins(read_settings(settings_file))

    return write
