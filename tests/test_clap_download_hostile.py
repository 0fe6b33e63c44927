"""A hub (or what answers as one) that says odd things never stops CLAP's download for good:
an etag that is no hash is refused before it can name a file, and a `.part` longer than the
file (a Range past its end, a 416 each try) starts over. A real HTTP server speaking the hub's
file protocol (tests/harness/hub_server.py); the etag is the test's, as no real hub sends one."""

import asyncio

import pytest

from soundspan_plugins.clap.download import (
    CorruptDownload,
    DownloadProgress,
    HubFile,
    fetch,
    remote_size,
)
from soundspan_plugins.clap.fetching import HubCheckpoint, fetch_with_retries
from tests.harness.hub_server import FakeHub

REPO = "someone/weights"
CONTENT = bytes(range(256)) * 64


@pytest.fixture
async def hub(aiohttp_server, monkeypatch):
    fake = FakeHub()
    fake.add(REPO, "model.pt", CONTENT, lfs=True)
    server = await aiohttp_server(fake.app())
    monkeypatch.setenv("HF_ENDPOINT", str(server.make_url("")).rstrip("/"))
    return fake


def download(destination):
    file = HubFile(REPO, "model.pt", destination)
    return fetch(file, *remote_size(file), DownloadProgress())


async def test_a_part_file_longer_than_the_file_starts_over(hub, tmp_path):
    """The repro: the Range past the end was answered 416, at every retry, forever."""
    destination = tmp_path / "models" / "model.pt"
    destination.parent.mkdir()
    etag = hub.files[f"{REPO}/model.pt"].etag
    partial = destination.with_name(f"model.pt.{etag[:16]}.part")
    partial.write_bytes(CONTENT + b"left over from something else")

    assert await asyncio.to_thread(download, destination) == destination
    assert destination.read_bytes() == CONTENT and not partial.exists()
    assert [line for line in hub.requests if line.startswith("GET")] == [f"GET {REPO}/model.pt "]


async def test_a_whole_part_file_is_checked_without_asking_again(hub, tmp_path):
    destination = tmp_path / "model.pt"
    etag = hub.files[f"{REPO}/model.pt"].etag
    destination.with_name(f"model.pt.{etag[:16]}.part").write_bytes(CONTENT)
    assert await asyncio.to_thread(download, destination) == destination
    assert not [line for line in hub.requests if line.startswith("GET")]


@pytest.mark.parametrize("etag", ["../../../etc/evil", "a/b", "W/not-a-hash", "ABC"])
async def test_an_etag_that_is_no_hash_is_refused_and_names_no_file(hub, tmp_path, etag):
    """The repro: an etag holding `/` made the .part name a path (ValueError), which killed
    the download task silently."""
    hub.files[f"{REPO}/model.pt"].etag = etag
    with pytest.raises(CorruptDownload, match="which is no sha256 or sha1"):
        await asyncio.to_thread(download, tmp_path / "model.pt")
    assert list(tmp_path.iterdir()) == []


async def test_the_download_task_retries_whatever_went_wrong_and_says_so(
    hub, tmp_path, monkeypatch
):
    """A failure of a kind nobody foresaw is reported and retried, never the task's end. No
    real hub answer raises one any more (the etag above did), so the first try is made to."""
    calls = []

    def fails_then_works(*args):
        calls.append(args)
        if len(calls) == 1:
            raise ValueError("something no one foresaw")

    monkeypatch.setattr("soundspan_plugins.clap.fetching.fetch_missing", fails_then_works)
    reports = []
    wanted = HubCheckpoint(REPO, "model.pt", None, tmp_path)
    await asyncio.wait_for(
        fetch_with_retries(wanted, False, DownloadProgress(), reports.append, 0.01), 30
    )
    assert len(calls) == 2
    assert "ValueError: something no one foresaw" in reports[1]
