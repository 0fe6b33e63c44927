"""Playlists written into a library others can write to: a name is never taken twice, a file
name cannot inject M3U lines, and a playlists folder that leads elsewhere (or is made to, after
its check) is refused. Also the
CLAP checkpoint that could only be read by running code from it."""

from __future__ import annotations

import os
import pathlib
import threading
from types import SimpleNamespace

import pytest
import torch

from soundspan_plugins.clap.loading import ClapUnavailable, load_clap
from soundspan_plugins.vibe_api.playlists import (
    PlaylistFolderRefused,
    playlists_folder,
    write_playlist,
)
from tests.harness.library import eventually, write_wav

RACERS = 16


def track(raw_path: bytes) -> SimpleNamespace:
    path = os.fsdecode(raw_path)
    return SimpleNamespace(raw_path=raw_path, path=path, title=None, artist=None, duration=1.0)


def test_racing_writers_without_overwrite_never_replace_each_other(tmp_path):
    folder = tmp_path / "Playlists"
    start = threading.Barrier(RACERS)
    outcomes: dict[int, str] = {}

    def race(number: int) -> None:
        start.wait()
        try:
            write_playlist(folder, "Mine", tmp_path, [track(f"{number}.flac".encode())], False)
            outcomes[number] = "written"
        except FileExistsError:
            outcomes[number] = "refused"

    racers = [threading.Thread(target=race, args=(number,)) for number in range(RACERS)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    [winner] = [number for number, outcome in outcomes.items() if outcome == "written"]
    assert list(outcomes.values()).count("refused") == RACERS - 1
    assert (folder / "Mine.m3u").read_bytes().splitlines()[-1] == f"../{winner}.flac".encode()
    assert [path.name for path in folder.iterdir()] == ["Mine.m3u"]  # no temporary left


@pytest.fixture
async def library(fast_host, music_dir):
    """A host over two tracks, one of whose file name holds a line break."""
    write_wav(music_dir / "plain.wav", 440)
    write_wav(music_dir / "two\nlines.wav", 550)
    client = await fast_host()

    async def both():
        found = (await (await client.get("/api/tracks")).json())["tracks"]
        return {entry["path"]: entry["id"] for entry in found} if len(found) == 2 else None

    client.ids = await eventually(both, what="both tracks")
    return client


async def test_a_file_name_with_a_line_break_is_left_out_and_said(library, music_dir):
    answer = await library.post(
        "/api/playlists", json={"name": "Odd", "track_ids": list(library.ids.values())}
    )
    assert answer.status == 201, await answer.text()
    assert await answer.json() == {
        "name": "Odd",
        "file": "Playlists/Odd.m3u",
        "tracks": 1,
        "left_out": ["two\nlines.wav"],
    }
    lines = (music_dir / "Playlists" / "Odd.m3u").read_bytes().splitlines()
    assert lines[0] == b"#EXTM3U" and lines[2] == b"../plain.wav" and len(lines) == 3

    only_odd = await library.post(
        "/api/playlists", json={"name": "Odder", "track_ids": [library.ids["two\nlines.wav"]]}
    )
    assert only_odd.status == 400 and "line breaks" in (await only_odd.json())["error"]["message"]
    assert not (music_dir / "Playlists" / "Odder.m3u").exists()


async def test_a_playlists_folder_that_leads_outside_the_music_dir_is_refused(
    library, music_dir, tmp_path
):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (music_dir / "Playlists").symlink_to(elsewhere, target_is_directory=True)
    answer = await library.post(
        "/api/playlists", json={"name": "Escape", "track_ids": [library.ids["plain.wav"]]}
    )
    assert answer.status == 503
    message = (await answer.json())["error"]["message"]
    assert "outside the music dir" in message and "[vibe_api] playlists_dir" in message
    assert list(elsewhere.iterdir()) == []


class RunsCode:
    """Unpickling this touches a file: the proof that loading a checkpoint ran its code."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def test_a_checkpoint_that_runs_code_is_refused_unless_allowed(tmp_path):
    marker = tmp_path / "code ran"
    checkpoint = tmp_path / "trojan.pt"
    torch.save(
        {"state_dict": {"logit_scale_a": torch.ones(())}, "hook": RunsCode(marker)}, checkpoint
    )

    with pytest.raises(ClapUnavailable) as refused:
        load_clap(checkpoint, towers=["audio"])
    assert "[clap] allow_unsafe_checkpoint" in str(refused.value)
    assert refused.value.setting.startswith("[clap] allow_unsafe_checkpoint")
    assert not marker.exists()

    with pytest.raises(ClapUnavailable, match="not a laion-clap checkpoint"):
        load_clap(checkpoint, towers=["audio"], allow_unsafe_checkpoint=True)
    assert marker.exists()  # allowed, it was unpickled in full: what the setting warns of


@pytest.mark.parametrize("swapped", ["Playlists", "Shared"], ids=["the folder", "one above it"])
def test_a_playlists_folder_swapped_for_a_link_after_its_check_gets_nothing(tmp_path, swapped):
    """The repro: the folder was checked by path, then used by path; swapped for a symlink in
    between (1 in ~10 tries), root wrote `*.m3u` wherever the link pointed. Here the swap
    comes exactly in between, every time."""
    music_dir = tmp_path / "music"
    (music_dir / "Shared" / "Playlists").mkdir(parents=True)
    outside = tmp_path / "outside"
    (outside / "Playlists").mkdir(parents=True)
    folder = playlists_folder(music_dir, pathlib.Path("Shared/Playlists"))

    real = music_dir / "Shared" if swapped == "Shared" else music_dir / "Shared" / "Playlists"
    real.rename(real.with_name(f"{real.name}.moved"))
    real.symlink_to(outside if swapped == "Shared" else outside / "Playlists")

    with pytest.raises(PlaylistFolderRefused):
        write_playlist(folder, "Mine", music_dir, [track(b"a.flac")], False)
    assert list((outside / "Playlists").iterdir()) == []
