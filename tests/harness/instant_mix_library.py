"""Instant Mix's library: tagged FLAC files whose first eight samples are their embedding (as
the vectors analyzer reads them), in our music dir and on a real Subsonic server (supysonic),
and a host with an API token and instant_mix on, matched with that server.

One track we keep locally only: it is the nearest to the seeds, and must never be answered.
"""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import mutagen
import numpy as np
import soundfile
from aiohttp.test_utils import TestClient

from soundspan_hooks import HOST
from soundspan_plugins.subsonic.client import Login, SubsonicClient
from tests.harness.library import eventually, settled
from tests.harness.subsonic_library import USERS, subsonic_settings
from tests.harness.subsonic_server import Supysonic, supysonic
from tests.harness.vector_library import axis, unit

TOKEN = "a-token-of-sixteen-or-more-characters"
# path -> (vector, title, artist, album)
LIBRARY = {
    "Aurora/North/1.flac": (unit(axis(0) + 0.05 * axis(2)), "Song 1", "Aurora", "North"),
    "Aurora/North/2.flac": (unit(axis(0) + 0.05 * axis(3)), "Song 2", "Aurora", "North"),
    "Aurora/North/3.flac": (unit(axis(0) + 0.15 * axis(4)), "Song 3", "Aurora", "North"),
    "Aurora/Live/1.flac": (unit(axis(0) + 0.06 * axis(2)), "Song 1 (Live)", "Aurora", "Live"),
    "Borealis/Sky/1.flac": (unit(axis(0) + 0.3 * axis(6)), "Lights", "Borealis", "Sky"),
    "Borealis/Sky/2.flac": (unit(axis(0) + 0.35 * axis(7)), "Glow", "Borealis", "Sky"),
    "Cirrus/High/1.flac": (unit(axis(1) + 0.2 * axis(6)), "Cloud", "Cirrus", "High"),
    "Cirrus/High/2.flac": (unit(axis(1) + 0.2 * axis(7)), "Rain", "Cirrus", "High"),
    "Dusk/Low/1.flac": (unit(-axis(0) + 0.2 * axis(1)), "Night", "Dusk", "Low"),
}
LOCAL_ONLY = {"Elsewhere/only.flac": (unit(axis(0) + 0.01 * axis(2)), "Only", "Elsewhere", "X")}
SONG_FIELDS = {"item_id": str, "title": str, "author": str, "album": str, "distance": float}


def write_vector_flac(path: Path, vector: np.ndarray, title: str, artist: str, album: str):
    """A tagged FLAC whose first eight samples are the vector (lossless, like the WAVs), then
    a little silence; a shorter vector is the whole file, too short for the analyzer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    silence = np.zeros(800 if len(vector) == 8 else 0)
    samples = np.concatenate([np.asarray(vector) * 0.9, silence])
    soundfile.write(str(path), np.round(samples * 32767).astype("<i2"), 16000, subtype="PCM_16")
    tagged = mutagen.File(path, easy=True)
    tagged.update({"title": title, "artist": artist, "album": album})
    tagged.save()


@contextmanager
def serving(tmp_path: Path, music_dir: Path, library: dict = LIBRARY) -> Iterator[Supysonic]:
    """`library` in our music dir and on a supysonic server; LOCAL_ONLY in ours only."""
    for path, (vector, *tags) in library.items():
        write_vector_flac(music_dir / path, vector, *tags)
    served = tmp_path / "server library"
    shutil.copytree(music_dir, served)
    for path, (vector, *tags) in LOCAL_ONLY.items():
        write_vector_flac(music_dir / path, vector, *tags)
    with supysonic(tmp_path / "supysonic", served, USERS) as running:
        yield running


async def listed_songs(server: Supysonic) -> list[dict]:
    """The server's songs, as its first user lists them."""
    async with aiohttp.ClientSession() as session:
        client = SubsonicClient(session, server.url, Login("alice", USERS["alice"], legacy=True))
        return [song async for song in client.songs()]


async def server_song_ids(server: Supysonic) -> dict[str, str]:
    """Our path -> the server's song id, as the server lists its songs."""
    return {
        song["path"].split("server library/", 1)[-1]: str(song["id"])
        for song in await listed_songs(server)
    }


async def mix_host(
    fast_host: Callable[..., Awaitable[TestClient]],
    server: Supysonic,
    extra: str = "",
    send_token: bool = True,
    on_server: dict = LIBRARY,
) -> TestClient:
    """A host (the `fast_host` fixture, the vectors analyzer installed) with an API token and
    instant_mix on, its library analyzed and matched with the server; its client sends the
    token as the current Navidrome plugin does, or none. `extra` goes in [instant_mix]."""
    section = "[instant_mix]\nenabled = true\n" + extra
    auth = {"Authorization": f"Bearer {TOKEN}"}
    client = await fast_host(
        f'api_token = "{TOKEN}"\n' + subsonic_settings(server, section),
        headers=auth if send_token else None,
    )
    count = len(on_server) + len(LOCAL_ONLY)
    await eventually(lambda: settled(client.app[HOST].engine, count), what="the analyses")

    async def matched():
        status = await (await client.get("/api/subsonic/status", headers=auth)).json()
        return status["matched"] == {"path": len(on_server)} and status["unmatched"] == 1

    await eventually(matched, what="the matches")
    return client


def read_songs(body, fields=SONG_FIELDS) -> list[dict]:
    """The answer as the plugins read it: a list of objects with exactly these typed fields."""
    assert isinstance(body, list), body
    for song in body:
        assert set(song) == set(fields), song
        for name, kind in fields.items():
            assert isinstance(song[name], kind) or (kind is float and type(song[name]) is int)
    return body
