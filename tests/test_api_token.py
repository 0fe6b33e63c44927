"""Any account on the machine could use a loopback API, and through it the user's music server
account: a host asks for a token by default, made in its data dir for its own user alone; the
CLI of that user reads it; `trust_local_accounts` opens loopback again."""

import json
import os
import stat
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from tests.harness.processes import start_host_process, wait_healthy


def get(port: int, path: str, token: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def host(tmp_path, music_dir, database_url, monkeypatch):
    """A host process with the defaults: no token configured, local accounts not trusted."""
    monkeypatch.delenv("SOUNDSPAN_TRUST_LOCAL_ACCOUNTS")
    process, port = start_host_process(tmp_path, music_dir, SOUNDSPAN_DATABASE_URL=database_url)
    try:
        wait_healthy(process, port)
        yield port
    finally:
        process.terminate()
        process.communicate(timeout=60)


def test_by_default_the_api_asks_for_the_token_the_host_made(host, tmp_path, database_url):
    token_file = tmp_path / "data" / "api-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert len(token) >= 32

    assert get(host, "/api/plugins")[0] == 401
    assert get(host, "/api/plugins", "not the token at all")[0] == 401
    assert get(host, "/api/plugins", token)[0] == 200
    assert get(host, "/healthz")[0] == 200  # what orchestrators probe stays open

    status = subprocess.run(
        [sys.executable, "-m", "soundspan_host", "status"],
        env={
            **os.environ,
            "SOUNDSPAN_PORT": str(host),
            "SOUNDSPAN_DATA_DIR": str(tmp_path / "data"),
            "SOUNDSPAN_DATABASE_URL": database_url,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert status.returncode == 0, status.stderr
    assert "no host is running" not in status.stderr  # it asked the host, with the token


def test_trusting_local_accounts_opens_loopback(tmp_path, music_dir, database_url):
    process, port = start_host_process(tmp_path, music_dir, SOUNDSPAN_DATABASE_URL=database_url)
    try:
        wait_healthy(process, port)
        assert get(port, "/api/plugins")[0] == 200
    finally:
        process.terminate()
        process.communicate(timeout=60)
    assert not (tmp_path / "data" / "api-token").exists()
