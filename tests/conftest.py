"""Shared fixtures: one real embedded PostgreSQL for the session, a fresh database per test,
the test plugins, and `fast_host`, a started host on them. Helpers live in tests/harness."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from soundspan_host.app import create_app
from soundspan_host.database.embedded import EmbeddedPostgres
from soundspan_host.database.embedded_placement import remove_cluster
from soundspan_host.plugins import load_plugins
from soundspan_host.settings import read_settings
from soundspan_plugins.musicnn.network import ModelNotAvailable, checkpoint_index
from tests.harness.database import database_url_for
from tests.harness.fast_settings import with_quick_timings
from tests.harness.plugins import ECHO_PLUGIN, TEST_PLUGINS, TOY_ANALYZER, VECTOR_ANALYZER

_seconds_per_file: Counter[str] = Counter()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _seconds_per_file[report.nodeid.split("::", 1)[0]] += report.duration


def pytest_terminal_summary(terminalreporter) -> None:
    """Where the suite's time goes, file by file (set-up and tear-down included)."""
    terminalreporter.section("seconds per test file")
    for path, seconds in _seconds_per_file.most_common():
        terminalreporter.write_line(f"{seconds:7.1f} s  {path}")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No SOUNDSPAN_* or seed variables leak in from the machine, and no stray settings.toml."""
    for name in list(os.environ):
        if name.startswith(("SOUNDSPAN_", "CLAP_", "MUSICNN_", "ECHO_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    # real analyzers cost seconds to start: tests that need one switch it back on
    monkeypatch.setenv("SOUNDSPAN_MUSICNN__ENABLED", "false")
    monkeypatch.setenv("SOUNDSPAN_CLAP__ENABLED", "false")
    # the API's own token is the subject of tests/test_api_token.py: elsewhere, as before it,
    # loopback is open (tests that need a token set one)
    monkeypatch.setenv("SOUNDSPAN_TRUST_LOCAL_ACCOUNTS", "true")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[EmbeddedPostgres]:
    """One server for the session, in a folder of its own (run as root, its cluster is placed
    where the server's OS user can reach it: see embedded_placement)."""
    data_dir = Path(tempfile.mkdtemp(prefix="soundspan-tests-"))
    server = EmbeddedPostgres(data_dir)
    server.start()
    yield server
    server.stop()
    remove_cluster(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def placed_clusters_removed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Run as root, a host on a data dir in pytest's private temp folders has its cluster
    placed under /var/lib/soundspan-host: remove those of this session's data dirs at its end."""
    yield
    for folder, names, _ in os.walk(tmp_path_factory.getbasetemp()):
        if "postgres" in names and os.path.islink(os.path.join(folder, "postgres")):
            remove_cluster(Path(folder))


@pytest.fixture
async def database_url(postgres_server: EmbeddedPostgres) -> str:
    """A URL to a new, empty database on the session's server, dropped after the test."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin_dsn = database_url_for(postgres_server, "postgres")
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    yield database_url_for(postgres_server, name)
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
def plugin_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on sys.path for test plugins; their modules are forgotten afterwards."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    yield site
    for plugin in TEST_PLUGINS:
        sys.modules.pop(plugin.module, None)


@pytest.fixture
def echo_plugin(plugin_site: Path) -> Path:
    """The echo plugin (settings, migration, lifespan, route), installed by entry point."""
    return ECHO_PLUGIN.install(plugin_site)


@pytest.fixture
def toy_analyzer(plugin_site: Path) -> Path:
    """The toy WAV analyzer, installed by entry point."""
    return TOY_ANALYZER.install(plugin_site)


@pytest.fixture
def vector_analyzer(plugin_site: Path) -> Path:
    """The vectors analyzer (a WAV's first eight samples are its embedding: see
    harness/vector_library.py), installed by entry point."""
    return VECTOR_ANALYZER.install(plugin_site)


@pytest.fixture(scope="module")
def musicnn_weights() -> None:
    """The MusiCNN weights come with the package: without them every test that asks for them
    fails (as the status page test without chromium), never skips unseen."""
    try:
        checkpoint_index("MSD_musicnn")
    except ModelNotAvailable as missing:
        pytest.fail(f"MusiCNN's weights are missing: {missing}")


@pytest.fixture
def music_dir(tmp_path: Path) -> Path:
    """The host's music folder, empty."""
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


@pytest.fixture
def fast_host(write_settings, aiohttp_client):
    """Start a host on the test database, over HTTP: `await fast_host(settings, **options)`
    returns its test client (`client.app[HOST]` is the host; `options` go to the client).

    `settings` is settings.toml text; the quick timings of harness/fast_settings.py (watcher,
    analyzers' queue polls, map refresh: 0.2 s) fill in what it does not set. Test plugins
    come from their fixtures (toy_analyzer, vector_analyzer), requested beside this one.
    """

    async def start(settings: str = "", **options) -> TestClient:
        plugins = write_settings(with_quick_timings(settings))
        return await aiohttp_client(create_app(plugins), **options)

    return start


@pytest.fixture
async def browser():
    """One headless chromium (Debian's, driven by playwright) for the test."""
    from tests.harness.browser import launched_chromium  # playwright only where a test asks

    async with launched_chromium() as chromium:
        yield chromium
