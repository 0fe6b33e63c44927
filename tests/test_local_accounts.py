"""What another account on the same machine cannot take: the API token, from a CLI that would
send it to a process of theirs on the host's port, and the embedded database's socket folder
where the user has a private runtime folder (XDG_RUNTIME_DIR)."""

import os
import socket
import stat
import subprocess
import sys

import pytest

from soundspan_host.database.embedded_access import socket_dir_for
from soundspan_host.listener_owner import listener_uids

TOKEN = "a-token-no-squatter-may-see"

# another account's listener, which prints whatever a client sends it: in perl, which Debian
# always has (perl-base is essential), since this project's Python may lie in a folder that
# account cannot enter
SQUATTER = (
    "use IO::Socket::INET; $| = 1;"
    " my $server = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,"
    " Listen => 1) or die $!; print $server->sockport, qq(\\n);"
    " my $client = $server->accept or exit; $client->recv(my $heard, 65536); print $heard;"
)


def test_a_listening_socket_is_known_by_its_owner():
    with socket.create_server(("127.0.0.1", 0)) as mine:
        port = mine.getsockname()[1]
        assert listener_uids("127.0.0.1", port) == {os.geteuid()}
    with socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True) as wild:
        port = wild.getsockname()[1]
        assert listener_uids("127.0.0.1", port) == {os.geteuid()}
        assert listener_uids("::1", port) == {os.geteuid()}
    assert listener_uids("127.0.0.1", port) == set()  # closed: no one


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can start a process as another account")
def test_the_cli_sends_no_token_to_another_accounts_process_on_the_port(tmp_path):
    """The repro: a squatter (another user) on the configured port got the token."""
    squatter = subprocess.Popen(
        ["perl", "-e", SQUATTER],
        user="nobody",
        stdout=subprocess.PIPE,
        text=True,
        cwd="/",
    )
    try:
        port = int(squatter.stdout.readline())
        cli = subprocess.run(
            [sys.executable, "-m", "soundspan_host", "status"],
            env={
                **os.environ,
                "SOUNDSPAN_PORT": str(port),
                "SOUNDSPAN_API_TOKEN": TOKEN,
                "SOUNDSPAN_MUSIC_DIR": str(tmp_path),
                "SOUNDSPAN_DATA_DIR": str(tmp_path / "data"),
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        squatter.kill()
        heard, _ = squatter.communicate(timeout=10)
    assert cli.returncode != 0
    assert "served by another account" in cli.stderr and TOKEN not in cli.stderr
    assert TOKEN not in heard and "Authorization" not in heard


def test_the_socket_folder_goes_to_the_users_private_runtime_folder(tmp_path, monkeypatch):
    """In /tmp another account can take a predictable name first; XDG_RUNTIME_DIR is ours."""
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    pgdata = tmp_path / ("long" * 25) / "postgres"
    folder = socket_dir_for(pgdata, 5432, None)
    assert folder.parent == runtime and stat.S_IMODE(folder.stat().st_mode) == 0o700
    runtime.chmod(0o777)  # not private: not used
    elsewhere = socket_dir_for(pgdata, 5432, None)
    try:
        assert elsewhere.parent != runtime
    finally:
        elsewhere.rmdir()
