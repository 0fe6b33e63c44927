"""The subsonic plugin against a real Subsonic server: supysonic, started by the test as its
own process on a library folder of real tagged files. supysonic speaks `p=` login only and
reports real paths relative to its folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from soundspan_hooks.cli import HostClient
from soundspan_host.doctor import run_checks
from soundspan_plugins.subsonic.commands import console, show_unmatched
from tests.harness.library import eventually
from tests.harness.subsonic_server import Supysonic, supysonic
from tests.harness.tagged_audio import write_tagged

PASSWORD = "correct horse"


def song(title: str, album: str = "Kind of Blue", artist: str = "Miles Davis") -> dict[str, str]:
    return {"title": title, "artist": artist, "album": album, "tracknumber": "1"}


@pytest.fixture
def server(tmp_path: Path, music_dir: Path):
    """Our library, and the server's: one song at the same path, one elsewhere with the same
    tags, one with the same tags but another length, and none for our local-only file."""
    write_tagged(music_dir / "Miles/Kind of Blue/01 So What.mp3", song("So What"))
    write_tagged(music_dir / "Miles/Kind of Blue/02 Blue in Green.flac", song("Blue in Green"))
    write_tagged(music_dir / "Miles/Kind of Blue/03 Flamenco.ogg", song("Flamenco"), seconds=5)
    write_tagged(music_dir / "Local/demo.mp3", song("Demo", album="Tapes"))
    library = tmp_path / "server library"
    shutil.copytree(music_dir / "Miles", library / "Miles")
    (library / "Miles/Kind of Blue/02 Blue in Green.flac").rename(library / "blue.flac")
    (library / "Miles/Kind of Blue/03 Flamenco.ogg").unlink()
    write_tagged(library / "shorter/flamenco.ogg", song("Flamenco"), seconds=1)
    with supysonic(tmp_path / "supysonic", library, {"alice": PASSWORD}) as running:
        yield running


def subsonic_section(server: Supysonic, password: str = PASSWORD, legacy: bool = True) -> str:
    return (
        f'[subsonic]\nenabled = true\nurl = "{server.url}"\n'
        f"legacy_login = {str(legacy).lower()}\n"
        "change_delay_seconds = 0.2\nretry_seconds = 0.2\n"
        f'[[subsonic.users]]\nname = "alice"\npassword = "{password}"\n'
    )


def login_checks(write_settings, extra: str):
    write_settings(extra)
    return {c.name: c for c in run_checks(None) if c.name.startswith("subsonic")}


def test_doctor_logs_in_with_the_legacy_password(server, write_settings):
    checks = login_checks(write_settings, subsonic_section(server))
    assert checks["subsonic login alice"].status == "ok"
    assert server.url in checks["subsonic login alice"].detail


def test_doctor_warns_that_a_legacy_login_over_http_shows_the_password(server, write_settings):
    """p=enc:<hex> is the password, only hex-encoded: anyone on the way reads it over http."""
    checks = login_checks(write_settings, subsonic_section(server))
    warning = checks["subsonic legacy login"]
    assert warning.status == "warn" and "plain http" in warning.detail and "https" in warning.fix
    assert "subsonic legacy login" not in login_checks(
        write_settings, subsonic_section(server, legacy=False)
    )


def test_doctor_says_why_a_login_fails(server, write_settings):
    checks = login_checks(write_settings, subsonic_section(server, password="wrong"))
    assert checks["subsonic login alice"].status == "fail"
    assert "Wrong username or password" in checks["subsonic login alice"].detail

    token = login_checks(write_settings, subsonic_section(server, legacy=False))
    assert token["subsonic login alice"].status == "fail"  # supysonic has no token login
    assert "legacy_login = true" in token["subsonic login alice"].fix


@pytest.fixture
async def host(server, fast_host):
    return await fast_host(subsonic_section(server))


async def status_of(client) -> dict:
    return await (await client.get("/api/subsonic/status")).json()


async def matched(client, expected: dict[str, int]):
    status = await status_of(client)
    return status if status["matched"] == expected and not status["not_checked"] else None


async def test_tracks_match_by_path_and_by_tags_and_the_rest_say_why(host, server):
    status = await eventually(
        lambda: matched(host, {"path": 1, "tags": 1}), what="the first refresh"
    )
    assert status["state"] == "ok" and status["songs_on_server"] == 3
    assert status["unmatched"] == 2

    answer = await (await host.get("/api/subsonic/unmatched")).json()
    reasons = {item["track"]["path"]: item["reason"] for item in answer["tracks"]}
    assert answer["total"] == 2
    assert (
        "none lasts within 2 s of ours (5 s; theirs: 1 s)"
        in reasons["Miles/Kind of Blue/03 Flamenco.ogg"]
    )
    assert "nor with title 'Demo'" in reasons["Local/demo.mp3"]

    client = HostClient(host.session, str(host.make_url("")).rstrip("/"), False, None)
    with console.capture() as shown:
        await show_unmatched(client, limit=10)  # `soundspan-host unmatched`
    assert "Local/demo.mp3" in shown.get() and "without a song on the server: 2" in shown.get()


async def test_a_new_file_on_both_sides_is_matched_after_the_change(host, server, music_dir):
    await eventually(lambda: matched(host, {"path": 1, "tags": 1}), what="the first refresh")
    write_tagged(server.library / "new/x.flac", song("Freddie Freeloader"))
    server.scan()
    write_tagged(music_dir / "Miles/Kind of Blue/04 Freddie.flac", song("Freddie Freeloader"))

    status = await eventually(
        lambda: matched(host, {"path": 1, "tags": 2}), what="the change to be matched"
    )
    assert status["tracks_checked"] <= 3  # the new track, and the two unmatched ones


async def test_a_server_down_during_a_refresh_keeps_the_last_good_matches(host, server):
    await eventually(lambda: matched(host, {"path": 1, "tags": 1}), what="the first refresh")
    before = await (await host.get("/api/subsonic/unmatched")).json()
    server.stop()

    assert (await host.post("/api/subsonic/refresh")).status == 202

    async def failed():
        status = await status_of(host)
        return status if status["state"] == "failed" else None

    status = await eventually(failed, what="the refresh to fail")
    assert "cannot reach" in status["error"] and server.url in status["error"]
    assert status["matched"] == {"path": 1, "tags": 1} and status["last_success"]
    assert await (await host.get("/api/subsonic/unmatched")).json() == before


async def unmatched_reasons(client) -> dict[str, str]:
    answer = await (await client.get("/api/subsonic/unmatched")).json()
    return {item["track"]["path"]: item["reason"] for item in answer["tracks"]}


async def test_a_file_the_server_scans_later_is_matched_before_the_hourly_refresh(
    host, server, music_dir
):
    """We saw the file first and found no song for it; the server scanned it a moment later.
    It stayed unmatched until the next hourly refresh, and fresh playlists shrank meanwhile."""
    await eventually(lambda: matched(host, {"path": 1, "tags": 1}), what="the first refresh")
    write_tagged(music_dir / "Miles/Kind of Blue/04 Freddie.flac", song("Freddie Freeloader"))

    async def unmatched_for_now():
        return "Miles/Kind of Blue/04 Freddie.flac" in await unmatched_reasons(host)

    await eventually(unmatched_for_now, what="the new file to be looked at")
    write_tagged(server.library / "new/freddie.flac", song("Freddie Freeloader"))
    server.scan()  # nothing changes on our side: only a new look finds it

    await eventually(lambda: matched(host, {"path": 1, "tags": 2}), what="the new look")


async def test_a_file_without_an_album_tag_matches_by_title_and_artist(host, server, music_dir):
    """supysonic calls the album of such a file `[non-album tracks]`: it never matched, and
    the reason printed `album None`."""
    await eventually(lambda: matched(host, {"path": 1, "tags": 1}), what="the first refresh")
    single = {"title": "Single", "artist": "Miles Davis"}
    write_tagged(server.library / "singles/single.mp3", single)
    server.scan()
    write_tagged(music_dir / "Singles/single.mp3", single)
    write_tagged(music_dir / "Singles/unreleased.mp3", {**single, "title": "Unreleased"})

    await eventually(lambda: matched(host, {"path": 1, "tags": 2}), what="the single")
    reason = (await unmatched_reasons(host))["Singles/unreleased.mp3"]
    assert "album None" not in reason and "the file has no album tag" in reason
