"""The known-vector library (harness/vector_library.py) on a real Subsonic server (supysonic,
its own process: harness/subsonic_server.py), and a host matched with it.

The server holds the arc and the south tracks with ASCII names; our music dir has those and
one local-only file, so every track matches by path except that one.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestClient

from soundspan_hooks import HOST
from soundspan_plugins.subsonic.client import Login, SubsonicClient
from tests.harness.library import eventually, settled
from tests.harness.subsonic_server import Supysonic, supysonic
from tests.harness.vector_library import ARC, OTHERS, arc, arc_vector, write_vector_wav

USERS = {"alice": "alice's secret", "bob": "bob's secret"}
SOUTH = [path for path in OTHERS if path.startswith("south/") and path.isascii()]
ON_SERVER = ARC + len(SOUTH)
SERVED = {*(arc(step) for step in range(ARC)), *SOUTH}  # what `serving_vector_library` copies


@contextmanager
def serving_vector_library(tmp_path: Path, music_dir: Path) -> Iterator[Supysonic]:
    """SERVED in our music dir and on a supysonic server for USERS; local/only.wav in ours
    only."""
    for step in range(ARC):
        write_vector_wav(music_dir / arc(step), arc_vector(step))
    for path in SOUTH:
        write_vector_wav(music_dir / path, OTHERS[path])
    library = tmp_path / "server library"
    shutil.copytree(music_dir, library)
    write_vector_wav(music_dir / "local/only.wav", OTHERS["elsewhere/up.wav"])  # not there
    with supysonic(tmp_path / "supysonic", library, USERS) as running:
        yield running


def subsonic_settings(server: Supysonic, extra: str = "") -> str:
    """[subsonic] on `server` for USERS, quick to match and to retry; `extra` follows."""
    users = "".join(
        f'[[subsonic.users]]\nname = "{name}"\npassword = "{password}"\n'
        for name, password in USERS.items()
    )
    return (
        f'[subsonic]\nenabled = true\nurl = "{server.url}"\nlegacy_login = true\n'
        "change_delay_seconds = 0.2\nretry_seconds = 0.2\n"
        "playlists_analysis_delay_seconds = 0.2\n" + users + extra
    )


async def matched_host(
    fast_host: Callable[..., Awaitable[TestClient]], server: Supysonic, extra: str = ""
) -> TestClient:
    """A host (the `fast_host` fixture, the vectors analyzer installed) whose library is
    analyzed and matched with `server`."""
    client = await fast_host(subsonic_settings(server, extra))
    await eventually(lambda: settled(client.app[HOST].engine, ON_SERVER + 1), what="analyses")

    async def matched():
        status = await (await client.get("/api/subsonic/status")).json()
        return status["matched"] == {"path": ON_SERVER} and status["unmatched"] == 1

    await eventually(matched, what="the matches")
    return client


@asynccontextmanager
async def user_clients() -> AsyncIterator[Callable[[Supysonic, str], SubsonicClient]]:
    """`as_user(server, name)`: the server as one of USERS sees it, through a client of their
    own."""
    async with aiohttp.ClientSession() as session:

        def as_user(server: Supysonic, user: str) -> SubsonicClient:
            return SubsonicClient(session, server.url, Login(user, USERS[user], legacy=True))

        yield as_user


async def on_server(client: SubsonicClient, name: str) -> list[list[str]]:
    """Each of the user's playlists called `name`: its songs' paths, in order."""
    found = []
    for playlist in await client.playlists():
        if playlist["name"] == name:
            entries = (await client.playlist(playlist["id"])).get("entry") or []
            found.append([entry["path"] for entry in entries])
    return found
