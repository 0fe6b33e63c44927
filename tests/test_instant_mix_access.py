"""Who may call the instant-mix routes: the API token, as the current Navidrome plugin sends it
(NeptuneHub/AudioMuse-AI-NV-plugin, main.go, authHeaders: `Authorization: Bearer <apiToken>`),
or no token from the client addresses `[instant_mix] clients_without_token` lists (the Jellyfin
plugin and the older Navidrome plugin send none); and what `doctor` says of the plugin."""

from __future__ import annotations

import pytest

from soundspan_plugins.instant_mix import plugin as instant_mix
from tests.harness.instant_mix_library import TOKEN, mix_host, server_song_ids, serving


@pytest.fixture
def server(tmp_path, music_dir):
    with serving(tmp_path, music_dir) as running:
        yield running


@pytest.fixture
async def song_ids(server) -> dict[str, str]:
    return await server_song_ids(server)


async def test_listed_clients_need_no_token_for_these_routes_only(
    fast_host, server, song_ids, vector_analyzer
):
    """The Jellyfin plugin and the older Navidrome plugin send no token; the current Navidrome
    plugin (main.go, authHeaders) sends `Authorization: Bearer <apiToken>`."""
    client = await mix_host(
        fast_host,
        server,
        extra='clients_without_token = ["127.0.0.0/8"]\n',
        send_token=False,
    )
    seed = song_ids["Aurora/North/1.flac"]
    similar = f"/api/similar_tracks?n=3&item_id={seed}"
    assert (await client.get(similar)).status == 200
    with_token = await client.get(similar, headers={"Authorization": f"Bearer {TOKEN}"})
    assert with_token.status == 200
    # a wrong token is refused whoever sends it; every other route still needs the token
    assert (await client.get(similar, headers={"Authorization": "Bearer wrong"})).status == 401
    assert (await client.get("/api/vibe/status")).status == 401
    playlist = {"name": "x", "track_ids": ["0" * 32]}
    assert (await client.post("/api/playlists", json=playlist)).status == 401
    alchemy = {"items": [{"id": seed, "op": "ADD", "type": "song"}], "n": 2}
    assert (await client.post("/api/alchemy", json=alchemy)).status == 200


async def test_clients_not_listed_need_the_token(fast_host, server, song_ids, vector_analyzer):
    client = await mix_host(
        fast_host,
        server,
        extra='clients_without_token = ["10.9.8.0/24"]\n',
        send_token=False,
    )
    similar = f"/api/similar_tracks?n=3&item_id={song_ids['Aurora/North/1.flac']}"
    assert (await client.get(similar)).status == 401
    assert (await client.get(similar, headers={"Authorization": f"Bearer {TOKEN}"})).status == 200


def test_doctor_says_when_no_music_server_plugin_gives_the_ids(write_settings, tmp_path):
    alone = write_settings("[instant_mix]\nenabled = true\n").settings.sections
    [check] = instant_mix.soundspan_doctor(sections=alone, music_dir=tmp_path, data_dir=tmp_path)
    assert check.status == "warn" and "[subsonic]" in check.fix
    with_server = write_settings(
        '[subsonic]\nenabled = true\nurl = "http://music.lan"\n'
        '[[subsonic.users]]\nname = "alice"\npassword = "x"\n'
        '[instant_mix]\nenabled = true\nclients_without_token = ["10.0.0.0/8"]\n'
    ).settings.sections
    [check] = instant_mix.soundspan_doctor(
        sections=with_server, music_dir=tmp_path, data_dir=tmp_path
    )
    assert check.status == "ok" and "10.0.0.0/8" in check.detail


def test_doctor_says_which_server_a_request_without_server_means(write_settings, tmp_path):
    servers = (
        '[jellyfin]\nenabled = true\nurl = "http://jf.lan"\napi_key = "k"\n'
        '[lyrion]\nenabled = true\nurl = "http://lms.lan"\n'
    )
    undecided = write_settings(servers + "[instant_mix]\nenabled = true\n").settings.sections
    [check] = instant_mix.soundspan_doctor(
        sections=undecided, music_dir=tmp_path, data_dir=tmp_path
    )
    assert check.status == "warn" and "default_server" in check.fix
    assert "jellyfin, lyrion" in check.fix
    chosen = write_settings(
        servers + '[instant_mix]\nenabled = true\ndefault_server = "lyrion"\n'
    ).settings.sections
    [check] = instant_mix.soundspan_doctor(sections=chosen, music_dir=tmp_path, data_dir=tmp_path)
    assert check.status == "ok" and "[lyrion]'s server" in check.detail
    assert "server=jellyfin" in check.detail
