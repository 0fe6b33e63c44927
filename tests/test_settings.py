"""Settings: defaults, settings.toml, env overrides, the seed's env names, and clear errors."""

from pathlib import Path

import pytest

from soundspan_hooks import PluginSettings, SettingsSection, legacy_env
from soundspan_host.errors import ConfigError
from soundspan_host.plugins import BUILTIN_PLUGINS, load_plugins
from soundspan_host.settings import HostSettings, read_settings, validate_settings


class WorkerSettings(PluginSettings):
    workers: int = legacy_env("CLAP_WORKERS", 2, "Analysis workers.", ge=1)
    sleep_interval: float = legacy_env("CLAP_SLEEP_INTERVAL", 5.0, "Queue poll interval.")


CLAP_LIKE = [SettingsSection("clap", WorkerSettings)]


@pytest.fixture(autouse=True)
def only_these_schemas(monkeypatch):
    """These tests validate against schemas of their own; no built-in plugin's env applies."""
    monkeypatch.delenv("SOUNDSPAN_MUSICNN__ENABLED")
    monkeypatch.delenv("SOUNDSPAN_CLAP__ENABLED")


def settings_from(tmp_path: Path, text: str = "", sections=CLAP_LIKE):
    path = tmp_path / "custom.toml"
    path.write_text(text)
    return validate_settings(read_settings(path), sections)


def test_defaults_when_nothing_is_set(tmp_path):
    settings = settings_from(tmp_path)
    assert settings.host.host == "127.0.0.1"
    assert settings.host.port == 3030
    assert settings.host.music_dir == Path("music")
    assert settings.host.database_url is None
    assert settings.section("clap").workers == 2
    assert settings.section("clap").enabled is True


def test_file_values_are_typed_and_env_overrides_them(tmp_path, monkeypatch):
    monkeypatch.setenv("SOUNDSPAN_PORT", "4040")
    monkeypatch.setenv("SOUNDSPAN_CLAP__ENABLED", "false")
    settings = settings_from(
        tmp_path, 'port = 5050\nmusic_dir = "/srv/music"\n[clap]\nworkers = 3\n'
    )
    assert settings.host.port == 4040
    assert settings.host.music_dir == Path("/srv/music")
    assert settings.section("clap").enabled is False
    assert settings.section("clap").workers == 3


def test_seed_env_names_beat_the_file_and_lose_to_prefixed_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("CLAP_WORKERS", "4")
    monkeypatch.setenv("CLAP_SLEEP_INTERVAL", "0.5")
    settings = settings_from(tmp_path, "[clap]\nworkers = 3\n")
    assert settings.section("clap").workers == 4
    assert settings.section("clap").sleep_interval == 0.5
    monkeypatch.setenv("SOUNDSPAN_CLAP__WORKERS", "6")
    assert settings_from(tmp_path, "[clap]\nworkers = 3\n").section("clap").workers == 6


def test_the_shipped_settings_file_states_exactly_the_defaults(monkeypatch):
    """settings.toml documents the defaults; it must never drift from the schemas."""
    monkeypatch.delenv("SOUNDSPAN_TRUST_LOCAL_ACCOUNTS")  # the suite's, not a default
    shipped = Path(__file__).parent.parent / "settings.toml"
    settings = load_plugins(read_settings(shipped)).settings
    assert settings.host.model_dump(exclude={"settings_file"}) == HostSettings().model_dump(
        exclude={"settings_file"}
    )
    for name, section in settings.sections.items():
        assert section == type(section)(), f"[{name}] in settings.toml differs from its defaults"
    assert set(settings.sections) == set(BUILTIN_PLUGINS)


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("colour = 'blue'\n", {}, "unknown setting colour"),
        ("", {"SOUNDSPAN_PORT": "abc"}, "bad setting port = 'abc'"),
        ("port = 70000\n", {}, "bad setting port = 70000"),
        ("[clapp]\nenabled = false\n", {}, "unknown plugin [clapp]"),
        ("", {"SOUNDSPAN_CLAPP__ENABLED": "false"}, "unknown plugin [clapp]"),
        ("[clap]\nworkerz = 2\n", {}, "unknown setting [clap] workerz"),
        ("", {"CLAP_WORKERS": "two"}, "bad setting [clap] workers = 'two'"),
        ("[clap]\nworkers = 0\n", {}, "bad setting [clap] workers = 0"),
        ("port = \n", {}, "cannot read settings"),
    ],
)
def test_mistakes_stop_with_a_line_naming_them(tmp_path, monkeypatch, text, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")) as error:
        settings_from(tmp_path, text)
    assert "\n" not in str(error.value)


def test_an_explicit_settings_file_must_exist(monkeypatch, tmp_path):
    monkeypatch.setenv("SOUNDSPAN_SETTINGS_FILE", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="missing.toml"):
        read_settings()


def test_settings_file_is_found_in_the_working_dir(tmp_path):
    (tmp_path / "settings.toml").write_text("port = 3131\n")
    assert validate_settings(read_settings(), []).host.port == 3131


@pytest.mark.parametrize(
    ("toml", "secret"),
    [
        # a number where a password goes: the repro printed `users.0.password = 987654321`
        ('[subsonic]\n[[subsonic.users]]\nname = "ann"\npassword = 987654321\n', "987654321"),
        ('[subsonic]\n[[subsonic.users]]\nname = "ann"\napi_key = 55555555\n', "55555555"),
        # a check of the whole section printed the section, the password in it
        (
            '[subsonic]\nenabled = true\n[[subsonic.users]]\nname = "ann"\n'
            'password = "hunter2-in-a-section"\n',
            "hunter2-in-a-section",
        ),
    ],
)
def test_settings_errors_print_no_plugin_secret(tmp_path, toml, secret):
    path = tmp_path / "settings.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as refused:
        load_plugins(read_settings(path))
    message = str(refused.value)
    assert "[subsonic]" in message and "(value hidden)" in message
    assert secret not in message


def test_a_plugins_plain_values_are_still_shown_in_errors(tmp_path):
    with pytest.raises(ConfigError) as refused:
        settings_from(tmp_path, '[clap]\nworkers = "many"\n')
    assert "bad setting [clap] workers = 'many': Input should be a valid integer" in str(
        refused.value
    )
