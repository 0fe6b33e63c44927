"""The API behind a browser and on an exposed host: other sites' pages cannot change anything
(CSRF) or read it through a name of theirs (DNS rebinding), slow or idle clients are cut off,
connections are capped, and what anyone can see or the log keeps gives nothing away."""

from __future__ import annotations

import http.client
import json
import os
import select
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import make_url

from soundspan_host.app import create_app
from soundspan_host.request_guards import allowed_host_names
from soundspan_host.settings import HostSettings
from tests.harness.database import database_url_for
from tests.harness.library import write_wav
from tests.harness.processes import DrainedProcess, start_host_process, wait_healthy

TOKEN = "security-test-token-0123456789"
FOREIGN = "http://attacker.example"
# generous: a host three times slower than this one still closes within these
CUT_OFF_WITHIN = 15.0


def send(
    port: int, method: str, path: str, headers: dict[str, str | bytes], body: bytes = b""
) -> tuple[int, dict]:
    """One request with exactly these headers (Host included); the status and JSON answer."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in {"Host": f"127.0.0.1:{port}", **headers}.items():
            connection.putheader(name, value)
        if body:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body or None)
        answer = connection.getresponse()
        text = answer.read()
        return answer.status, json.loads(text) if text else {}
    finally:
        connection.close()


def get(port: int, path: str, token: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.load(answer)


def wait_until(check, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def serve(tmp_path, music_dir, database_url):
    """Start `soundspan-host serve` with these settings; stopped (and checked for tracebacks)
    after the test."""
    started: list[DrainedProcess] = []

    def start(**env: str) -> int:
        process, port = start_host_process(
            tmp_path, music_dir, SOUNDSPAN_DATABASE_URL=database_url, **env
        )
        started.append(process)
        wait_healthy(process, port)
        return port

    yield start
    for process in started:
        process.terminate()
        output, _ = process.communicate(timeout=30)
        assert "Traceback" not in output, output


def test_a_page_of_another_site_changes_nothing(serve, music_dir):
    write_wav(music_dir / "song.wav")
    favourites = music_dir / "Playlists" / "Favourites.m3u"
    favourites.parent.mkdir()
    favourites.write_bytes(b"#EXTM3U\nmine.flac\n")
    port = serve()
    track = wait_until(lambda: get(port, "/api/tracks")["tracks"], "the track")[0]["id"]
    replace = json.dumps({"name": "Favourites", "track_ids": [track], "overwrite": True}).encode()

    # what fetch(..., {mode: "no-cors", body: "{...}"}) sends: text/plain, its page's Origin
    status, answer = send(
        port,
        "POST",
        "/api/playlists",
        {"Origin": FOREIGN, "Content-Type": "text/plain;charset=UTF-8"},
        replace,
    )
    assert status == 403 and "cors_origins" in answer["error"]["message"], (status, answer)
    json_headers = {"Content-Type": "application/json"}
    status, answer = send(
        port, "POST", "/api/playlists", {"Origin": FOREIGN, **json_headers}, replace
    )
    assert status == 403 and "cors_origins" in answer["error"]["message"]
    for path in ("/api/library/scan", "/api/analysis/retry"):
        assert send(port, "POST", path, {"Origin": FOREIGN})[0] == 403
        assert send(port, "POST", path, {"Origin": "null"})[0] == 403
        assert send(port, "POST", path, {"Sec-Fetch-Site": "cross-site"})[0] == 403
    assert favourites.read_bytes() == b"#EXTM3U\nmine.flac\n"

    # no page (the CLI, curl) must still say the body is JSON
    status, answer = send(port, "POST", "/api/playlists", {"Content-Type": "text/plain"}, replace)
    assert status == 415 and "application/json" in answer["error"]["message"]
    assert favourites.read_bytes() == b"#EXTM3U\nmine.flac\n"
    # the host's own page (the status page) and plain clients may
    own = {"Origin": f"http://127.0.0.1:{port}", **json_headers}
    assert send(port, "POST", "/api/playlists", own, replace)[0] == 201
    assert favourites.read_bytes() != b"#EXTM3U\nmine.flac\n"
    assert send(port, "POST", "/api/library/scan", {})[0] == 202


def test_a_name_that_is_not_the_hosts_own_is_refused(serve):
    port = serve()
    for name in (f"rebound.example:{port}", "rebound.example", f"127.0.0.1.nip.io:{port}"):
        status, answer = send(port, "GET", "/api/tracks", {"Host": name})
        assert status == 421, name
        assert "allowed_hosts" in answer["error"]["message"]
    for name in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST"):
        assert send(port, "GET", "/api/tracks", {"Host": name})[0] == 200, name
    # an orchestrator probes by address, and learns no more than "ok"
    assert send(port, "GET", "/healthz", {"Host": "10.1.2.3:3030"}) == (
        200,
        {"status": "ok", "database": "ok"},
    )


def test_allowed_hosts_adds_names(serve):
    port = serve(SOUNDSPAN_ALLOWED_HOSTS="music.lan,10.0.0.5")
    assert send(port, "GET", "/api/tracks", {"Host": f"music.lan:{port}"})[0] == 200
    assert send(port, "GET", "/api/tracks", {"Host": "10.0.0.5"})[0] == 200
    assert send(port, "GET", "/api/tracks", {"Host": "other.lan"})[0] == 421


def test_the_names_allowed_follow_the_bound_address():
    loopback = {"localhost", "127.0.0.1", "::1"}

    def names(**values):
        return allowed_host_names(HostSettings(**values))

    assert names() == loopback
    assert names(host="192.168.1.5", api_token=TOKEN) == loopback | {"192.168.1.5"}
    assert names(allowed_hosts=["Music.LAN", "[fd00::5]"]) == loopback | {"music.lan", "fd00::5"}
    assert names(allowed_hosts=["*"]) is None
    # bound everywhere the host cannot know its names; the token guards it there
    assert names(host="0.0.0.0", api_token=TOKEN) is None
    assert names(host="::", api_token=TOKEN, allowed_hosts=["music.lan"]) == loopback | {
        "music.lan"
    }


@pytest.mark.parametrize("token", [None, TOKEN], ids=["no token", "token"])
def test_the_cli_works_with_and_without_a_token(serve, music_dir, database_url, token):
    write_wav(music_dir / "song.wav")
    env = {"SOUNDSPAN_API_TOKEN": token} if token else {}
    port = serve(**env)
    command = {
        **os.environ,
        "SOUNDSPAN_PORT": str(port),
        "SOUNDSPAN_MUSIC_DIR": str(music_dir),
        "SOUNDSPAN_DATABASE_URL": database_url,
        **env,
    }
    for arguments in (["scan", "--wait"], ["status"], ["failed", "--retry"]):
        done = subprocess.run(
            [sys.executable, "-m", "soundspan_host", *arguments],
            env=command,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, (arguments, done.stdout, done.stderr)
        assert "no host is running" not in done.stderr
    assert get(port, "/api/library/scan", token)["last"] is not None


def read_until_closed(connection: socket.socket, within: float) -> bytes:
    """Everything the server sends until it closes; fails if it keeps the socket open longer."""
    connection.settimeout(within)
    received = b""
    while chunk := connection.recv(65536):
        received += chunk
    return received


def test_slow_and_idle_clients_are_cut_off(serve):
    port = serve(SOUNDSPAN_HTTP_IDLE_TIMEOUT="1", SOUNDSPAN_HTTP_BODY_TIMEOUT="1")
    address = ("127.0.0.1", port)

    with socket.create_connection(address) as silent:
        assert read_until_closed(silent, CUT_OFF_WITHIN) == b""
    with socket.create_connection(address) as half_a_line:
        half_a_line.sendall(b"GET /api/tra")
        assert read_until_closed(half_a_line, CUT_OFF_WITHIN) == b""

    # headers a byte at a time, each in time for a per-read timeout, never all of them
    started = time.monotonic()
    with socket.create_connection(address) as dribbling:
        dribbling.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        while time.monotonic() - started < CUT_OFF_WITHIN:
            try:
                dribbling.sendall(b"a")
                readable, _, _ = select.select([dribbling], [], [], 0.2)
                if readable and dribbling.recv(1) == b"":
                    break
            except (BrokenPipeError, ConnectionResetError):
                break
        else:
            raise AssertionError("a client dribbling its headers was never cut off")

    with socket.create_connection(address) as slow_body:
        slow_body.sendall(
            b"POST /api/vibe/search HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"text": '
        )
        assert read_until_closed(slow_body, CUT_OFF_WITHIN).startswith(b"HTTP/1.1 408")

    with socket.create_connection(address) as kept_alive:
        kept_alive.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_until_closed(kept_alive, CUT_OFF_WITHIN).startswith(b"HTTP/1.1 200")


def test_connections_past_the_cap_get_a_503(serve):
    port = serve(SOUNDSPAN_HTTP_MAX_CONNECTIONS="3", SOUNDSPAN_HTTP_IDLE_TIMEOUT="60")
    address = ("127.0.0.1", port)
    idle = [socket.create_connection(address) for _ in range(3)]
    try:
        with socket.create_connection(address) as one_too_many:
            answer = read_until_closed(one_too_many, CUT_OFF_WITHIN)
        assert answer.startswith(b"HTTP/1.1 503")
        assert b"too many open connections" in answer
    finally:
        for connection in idle:
            connection.close()

    def served() -> bool:
        try:
            return get(port, "/healthz")["status"] == "ok"
        except OSError:  # urllib's HTTPError too: still at the cap
            return False

    wait_until(served, "a connection once the others closed")


def test_an_authorization_header_that_is_not_utf8_is_a_401(serve):
    port = serve(SOUNDSPAN_API_TOKEN=TOKEN)
    for value in (b"Bearer \xff\xfe", b"\xc3(", TOKEN.encode() + b"\x80"):
        status, answer = send(port, "GET", "/api/tracks", {"Authorization": value})
        assert status == 401, value
        assert "API token" in answer["error"]["message"]
    assert send(port, "GET", "/api/tracks", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    # the fixture checks the host logged no traceback


async def test_health_tells_no_version_and_no_database_error(
    aiohttp_client, write_settings, database_url, postgres_server
):
    client = await aiohttp_client(create_app(write_settings()))
    healthy = await client.get("/healthz")
    assert (healthy.status, await healthy.json()) == (200, {"status": "ok", "database": "ok"})

    name = make_url(database_url).database
    admin = await asyncpg.connect(database_url_for(postgres_server, "postgres"))
    try:
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        await admin.close()
    down = await client.get("/healthz")
    assert down.status == 503
    assert await down.json() == {"status": "unavailable", "database": "unavailable"}


async def test_cors_only_for_configured_origins(aiohttp_client, write_settings):
    player = "https://player.example"
    app = create_app(write_settings(f'cors_origins = ["{player}"]\n'))
    client = await aiohttp_client(app)
    preflight = await client.options(
        "/api/library/scan",
        headers={"Origin": player, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == player
    scan = await client.post("/api/library/scan", headers={"Origin": player})
    assert scan.status == 202 and scan.headers["Access-Control-Allow-Origin"] == player
    listed = await client.get("/api/tracks", headers={"Origin": player})
    assert listed.headers["Access-Control-Allow-Origin"] == player

    other = await client.get("/api/tracks", headers={"Origin": FOREIGN})
    assert "Access-Control-Allow-Origin" not in other.headers
    assert (await client.post("/api/library/scan", headers={"Origin": FOREIGN})).status == 403


async def test_without_cors_origins_no_answer_carries_cors_headers(aiohttp_client, write_settings):
    client = await aiohttp_client(create_app(write_settings()))
    listed = await client.get("/api/tracks", headers={"Origin": FOREIGN})
    assert listed.status == 200 and "Access-Control-Allow-Origin" not in listed.headers
    preflight = await client.options(
        "/api/library/scan", headers={"Origin": FOREIGN, "Access-Control-Request-Method": "POST"}
    )
    assert "Access-Control-Allow-Origin" not in preflight.headers


def host_output(tmp_path: Path, **env: str) -> str:
    """What `soundspan-host serve` prints when its settings stop it."""
    done = subprocess.run(
        [sys.executable, "-m", "soundspan_host", "serve"],
        env={**os.environ, "SOUNDSPAN_MUSIC_DIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    return done.stdout + done.stderr


def test_secrets_in_rejected_settings_are_not_printed(tmp_path):
    digits = "1234567890123456"
    output = host_output(tmp_path, SOUNDSPAN_API_TOKEN=digits)
    assert digits not in output and "bad setting api_token (value hidden)" in output
    output = host_output(tmp_path, SOUNDSPAN_API_TOKEN="short")
    assert "short" not in output and "api_token" in output
    for url in ("postgresql://me:hunter2@db:notaport/music", "not a url hunter2"):
        output = host_output(tmp_path, SOUNDSPAN_DATABASE_URL=url)
        assert "hunter2" not in output and "database_url is not a database URL" in output
