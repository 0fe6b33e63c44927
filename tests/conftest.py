"""Shared fixtures: one real embedded PostgreSQL for the session, a fresh database per test."""

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
from sqlalchemy import make_url

from soundspan_host.database.embedded import EmbeddedPostgres
from soundspan_host.database.embedded_placement import remove_cluster
from soundspan_host.plugins import load_plugins
from soundspan_host.settings import read_settings
from soundspan_plugins.musicnn.network import ModelNotAvailable, checkpoint_index

TESTS = Path(__file__).parent
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


def database_url_for(server: EmbeddedPostgres, database: str) -> str:
    """A URL (password included) to `database` on `server`, as a user would write it."""
    return (
        make_url(server.url)
        .set(drivername="postgresql", database=database)
        .render_as_string(hide_password=False)
    )


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


def install_plugin(site: Path, source: Path, module: str, name: str, version: str) -> None:
    """Install a test plugin as a real distribution with an entry point, into `site`."""
    site.mkdir(exist_ok=True)
    shutil.copy(source / f"{module}.py", site)
    shutil.copytree(source / "migrations", site / f"{module}_migrations")
    dist_info = site / f"{module}-{version}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: {version}\n"
    )
    (dist_info / "entry_points.txt").write_text(f"[soundspan_host.plugins]\n{name} = {module}\n")


@pytest.fixture
def plugin_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on sys.path for test plugins; their modules are forgotten afterwards."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    yield site
    for module in ("soundspan_test_echo", "soundspan_test_toy"):
        sys.modules.pop(module, None)


@pytest.fixture
def echo_plugin(plugin_site: Path) -> Path:
    """The echo plugin (settings, migration, lifespan, route), installed by entry point."""
    install_plugin(plugin_site, TESTS / "echo_plugin", "soundspan_test_echo", "echo", "1.2.3")
    return plugin_site


@pytest.fixture
def toy_analyzer(plugin_site: Path) -> Path:
    """The toy WAV analyzer, installed by entry point."""
    install_plugin(plugin_site, TESTS / "toy_analyzer", "soundspan_test_toy", "toy", "0.1.0")
    return plugin_site


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
