"""The host end to end over real HTTP: health, plugins by entry point, settings, lifetimes."""

import pytest
from aiohttp import web
from sqlalchemy import text

from soundspan_hooks import HOST
from soundspan_host import __version__
from soundspan_host.app import create_app
from soundspan_host.errors import ConfigError
from soundspan_host.plugins import load_plugins
from soundspan_host.settings import read_settings


async def start_and_stop(app: web.Application) -> None:
    runner = web.AppRunner(app)
    try:
        await runner.setup()
    finally:
        await runner.cleanup()


def builtin(name: str, enabled: bool) -> dict:
    """A built-in plugin as GET /api/plugins lists it; none of these feeds a status panel."""
    return {"name": name, "version": __version__, "builtin": True, "enabled": enabled, "panels": []}


WATCHER = builtin("watcher", True)
MUSICNN_OFF = builtin("musicnn", False)
VIBE_API = builtin("vibe_api", True)
STATUS_PAGE = builtin("status_page", True)
CLAP_OFF = builtin("clap", False)
SUBSONIC_OFF = builtin("subsonic", False)
MIX_OFF = builtin("instant_mix", False)
JELLYFIN_OFF = builtin("jellyfin", False)
LYRION_OFF = builtin("lyrion", False)
BUILTINS = [
    WATCHER, MUSICNN_OFF, CLAP_OFF, VIBE_API, STATUS_PAGE, SUBSONIC_OFF, JELLYFIN_OFF,
    LYRION_OFF, MIX_OFF,
]  # fmt: skip


async def test_health_and_the_built_in_plugins(aiohttp_client, write_settings):
    client = await aiohttp_client(create_app(write_settings()))
    health = await client.get("/healthz")
    assert health.status == 200
    assert (await health.json())["database"] == "ok"
    listing = await (await client.get("/api/plugins")).json()
    assert listing == {"plugins": BUILTINS}


async def test_core_schema_and_pgvector_are_ready(aiohttp_client, write_settings):
    client = await aiohttp_client(create_app(write_settings()))
    async with client.app[HOST].engine.begin() as connection:
        await connection.execute(text("INSERT INTO contents (id, size) VALUES ('fp', 10)"))
        await connection.execute(
            text(
                "INSERT INTO tracks (id, raw_path, path, content_id, size, mtime, title, duration)"
                " VALUES ('t1', 'a/b.flac', 'a/b.flac', 'fp', 10, 1.5, 'Song', 201.5)"
            )
        )
        row = (await connection.execute(text("SELECT path, title, duration FROM tracks"))).one()
        distance = (
            await connection.execute(text("SELECT '[1,0]'::vector <=> '[0,1]'::vector"))
        ).scalar()
    assert tuple(row) == ("a/b.flac", "Song", 201.5)
    assert distance == pytest.approx(1.0)


async def test_third_party_plugin_loads_by_entry_point(aiohttp_client, write_settings, echo_plugin):
    events = echo_plugin / "events"
    client = await aiohttp_client(
        create_app(write_settings(f'[echo]\ngreeting = "hi"\nevents_file = "{events}"\n'))
    )
    listing = await (await client.get("/api/plugins")).json()
    assert listing["plugins"] == [
        *BUILTINS,
        {"name": "echo", "version": "1.2.3", "builtin": False, "enabled": True, "panels": []},
    ]
    answer = await client.get("/api/echo")
    assert answer.status == 200
    # its migration ran before its lifespan, which wrote a row at start-up
    assert await answer.json() == {"echo": ["hi"], "starts": 1}
    assert events.read_text() == "start\n"
    await client.close()
    assert events.read_text() == "start\nstop\n"


async def test_plugin_disabled_in_settings_file_never_runs(
    aiohttp_client, write_settings, echo_plugin
):
    events = echo_plugin / "events"
    client = await aiohttp_client(
        create_app(write_settings(f'[echo]\nenabled = false\nevents_file = "{events}"\n'))
    )
    listing = await (await client.get("/api/plugins")).json()
    assert listing["plugins"][-1] == {**listing["plugins"][-1], "name": "echo", "enabled": False}
    assert (await client.get("/api/echo")).status == 404
    assert not events.exists()


async def test_plugin_disabled_and_configured_by_env(
    aiohttp_client, write_settings, echo_plugin, monkeypatch
):
    monkeypatch.setenv("SOUNDSPAN_ECHO__ENABLED", "false")
    client = await aiohttp_client(create_app(write_settings()))
    assert (await client.get("/api/echo")).status == 404

    monkeypatch.setenv("SOUNDSPAN_ECHO__ENABLED", "true")
    monkeypatch.setenv("ECHO_TIMES", "2")
    client = await aiohttp_client(create_app(write_settings()))
    assert (await (await client.get("/api/echo")).json())["echo"] == ["hello", "hello"]


def test_bad_plugin_setting_is_named(write_settings, echo_plugin):
    with pytest.raises(ConfigError, match=r"bad setting \[echo\] times = 0"):
        write_settings("[echo]\ntimes = 0\n")


async def test_missing_music_dir_stops_start_up(write_settings, music_dir):
    plugins = write_settings()
    music_dir.rmdir()
    with pytest.raises(ConfigError, match="music dir .* does not exist"):
        await start_and_stop(create_app(plugins))


async def test_unreachable_database_is_one_clear_error(tmp_path, music_dir):
    settings_file = tmp_path / "settings.toml"
    settings_file.write_text(
        f'music_dir = "{music_dir}"\n'
        'database_url = "postgresql://nobody:secret@127.0.0.1:9/soundspan"\n'
    )
    with pytest.raises(ConfigError, match="cannot use the database") as error:
        await start_and_stop(create_app(load_plugins(read_settings(settings_file))))
    assert "secret" not in str(error.value)
