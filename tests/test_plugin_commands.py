"""Plugins bring their own commands (soundspan_commands): a third-party plugin's command is
listed by `soundspan-host --help` and runs like the host's own, only while the plugin is
enabled; bad settings leave the host's commands working and name the error for the others."""

import subprocess
import sys

from tests.harness.cli_host import cli, environment
from tests.harness.plugins import ECHO_PLUGIN


def plugin_environment(tmp_path, **extra: str) -> dict[str, str]:
    """The CLI tests' environment, with the echo plugin installed beside the vectors one."""
    env = environment(tmp_path, **extra)
    ECHO_PLUGIN.install(tmp_path / "site")
    (tmp_path / "music").mkdir(exist_ok=True)
    return env


def help_text(env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "soundspan_host", "--help"],
        env={**env, "COLUMNS": "100"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_plugins_command_is_listed_and_runs(tmp_path, database_url):
    env = plugin_environment(
        tmp_path, SOUNDSPAN_DATABASE_URL=database_url, SOUNDSPAN_ECHO__GREETING="hi there"
    )
    listed = help_text(env)
    assert "echo plugin" in listed and "Print what GET /api/echo answers" in listed
    assert "status" in listed and "scan" in listed  # the host's own, and the watcher's

    done = cli(env, "echo")  # no host runs: a private one answers, on the same database
    assert done.returncode == 0, done.stderr
    assert "no host is running" in done.stderr
    assert "echo after 1 starts" in done.stdout and "hi there" in done.stdout


def test_a_disabled_plugin_adds_no_command(tmp_path):
    env = plugin_environment(tmp_path, SOUNDSPAN_ECHO__ENABLED="false")
    assert "echo plugin" not in help_text(env)
    done = cli(env, "echo")
    assert done.returncode == 2 and "No such command 'echo'" in done.stderr


def test_bad_settings_leave_the_hosts_commands_and_name_the_error_for_a_plugins(tmp_path):
    env = plugin_environment(tmp_path, SOUNDSPAN_ECHO__TIMES="0")
    assert "doctor" in help_text(env)
    done = cli(env, "echo")
    assert done.returncode == 2
    assert "soundspan-host: error: bad setting [echo] times = 0" in done.stderr
    doctor = cli(env, "doctor")
    assert doctor.returncode == 1 and "times = 0" in doctor.stdout
