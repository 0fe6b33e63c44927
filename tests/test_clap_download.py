"""The default CLAP model downloaded in the background from a hub: a real host, a real HTTP
server speaking the hub's file protocol (tests/harness/hub_server.py, reached through
HF_ENDPOINT), a tiny checkpoint in laion-clap's layout. The host starts at once; CLAP shows its
download in the status and its jobs wait; a cut transfer resumes, a partial file from an
earlier run is continued, a damaged file is refused, a hub that is down is retried while other
analyzers work, and with HF_HUB_OFFLINE it says so and why."""

import asyncio

import pytest
from huggingface_hub import constants as hub_constants

from soundspan_hooks import HOST
from soundspan_plugins.clap.fetching import DEFAULT_MODEL, TOKENIZER_REPO
from tests.harness.clap_models import save_hub_files
from tests.harness.hub_server import FakeHub
from tests.harness.library import all_done, eventually, jobs, settled, tone, write_wave

CHECKPOINT = "music_audioset_epoch_15_esc_90.14.pt"
REPO = "lukewys/laion_clap"
CLAP = "[clap]\nworkers = 1\ndownload_retry_seconds = 0.2\n"


@pytest.fixture(scope="module")
def hub_files(tmp_path_factory):
    return {
        name: path.read_bytes()
        for name, path in save_hub_files(tmp_path_factory.mktemp("hub")).items()
    }


@pytest.fixture
async def hub(aiohttp_server, hub_files, monkeypatch, music_dir):
    fake = FakeHub()
    for name, content in hub_files.items():
        repo = REPO if name == CHECKPOINT else TOKENIZER_REPO
        fake.add(repo, name, content, lfs=name == CHECKPOINT)
    server = await aiohttp_server(fake.app())
    monkeypatch.setenv("HF_ENDPOINT", str(server.make_url("")).rstrip("/"))
    # small reads, so the progress moves within a few-MB test file (the hub's are 10 MB)
    monkeypatch.setattr(hub_constants, "DOWNLOAD_CHUNK_SIZE", 256 * 1024)
    monkeypatch.setenv("SOUNDSPAN_CLAP__ENABLED", "true")
    write_wave(music_dir / "song.wav", tone(3.0, 48000), 48000)
    return fake


async def clap_status(client) -> dict:
    status = await (await client.get("/api/vibe/status")).json()
    return next(entry for entry in status["analyzers"] if entry["name"] == "clap")


def downloaded(tmp_path):
    return tmp_path / "data" / "models" / "clap" / "lukewys--laion_clap" / CHECKPOINT


async def test_first_start_downloads_in_the_background_and_resumes_a_cut_transfer(
    hub, hub_files, fast_host, tmp_path
):
    hub.cut_once = CHECKPOINT
    client = await fast_host(CLAP)  # starts at once
    engine = client.app[HOST].engine
    await asyncio.wait_for(hub.cut_reached.wait(), 60)
    size = len(hub_files[CHECKPOINT])
    tokenizer_size = sum(len(content) for name, content in hub_files.items() if name != CHECKPOINT)

    async def halfway():
        clap = await clap_status(client)
        download = clap["download"]
        return clap if download and download["bytes_done"] >= tokenizer_size + size // 4 else None

    clap = await eventually(halfway, what="download progress in the status")
    assert clap["state"] == "downloading" and clap["model_id"] == DEFAULT_MODEL
    assert clap["download"]["bytes_total"] == size + tokenizer_size
    assert clap["download"]["file"] == CHECKPOINT
    assert clap["download"]["bytes_done"] < clap["download"]["bytes_total"]
    await eventually(lambda: _clap_jobs(engine, {"pending"}), what="a CLAP job waiting")

    hub.cut_release.set()  # the connection drops; huggingface_hub resumes with a Range
    await eventually(lambda: settled(engine, 1), timeout=120, what="CLAP after the download")
    await all_done(engine, "clap", 1)
    clap = await clap_status(client)
    assert clap["state"] == "ready" and clap["download"] is None and clap["trained"] is False
    assert downloaded(tmp_path).read_bytes() == hub_files[CHECKPOINT]
    assert any(f"GET {REPO}/{CHECKPOINT} bytes=" in line for line in hub.requests)


async def test_a_partial_file_from_an_earlier_run_is_continued(hub, hub_files, fast_host, tmp_path):
    content = hub_files[CHECKPOINT]
    etag = hub.files[f"{REPO}/{CHECKPOINT}"].etag
    partial = downloaded(tmp_path).with_name(f"{CHECKPOINT}.{etag[:16]}.part")
    partial.parent.mkdir(parents=True)
    partial.write_bytes(content[: len(content) // 3])
    client = await fast_host(CLAP)
    engine = client.app[HOST].engine
    await eventually(lambda: settled(engine, 1), timeout=120, what="CLAP after the download")
    await all_done(engine, "clap", 1)
    assert f"GET {REPO}/{CHECKPOINT} bytes={len(content) // 3}-" in hub.requests
    assert downloaded(tmp_path).read_bytes() == content and not partial.exists()


async def test_a_damaged_download_is_refused_then_fetched_again(
    hub, hub_files, fast_host, tmp_path
):
    served = hub.files[f"{REPO}/{CHECKPOINT}"]
    right = served.content
    served.content = right[:-1] + bytes([right[-1] ^ 0xFF])  # same size, other bytes
    client = await fast_host(CLAP)

    async def refused():
        clap = await clap_status(client)
        return clap if clap["state"] == "unavailable" else None

    clap = await eventually(refused, what="the damaged file refused")
    assert "hash" in clap["reason"] and "trying again" in clap["reason"]
    assert "[clap] model" in clap["reason"]
    assert not downloaded(tmp_path).exists()
    assert not list(downloaded(tmp_path).parent.glob("*.part"))

    served.content = right
    engine = client.app[HOST].engine
    await eventually(lambda: settled(engine, 1), timeout=120, what="CLAP after the fix")
    await all_done(engine, "clap", 1)
    assert downloaded(tmp_path).read_bytes() == right


async def test_a_hub_that_is_down_is_retried_while_other_analyzers_work(
    hub, toy_analyzer, fast_host, tmp_path
):
    hub.down = True
    client = await fast_host(CLAP)
    engine = client.app[HOST].engine

    async def toy_done_clap_waiting():
        states = {
            analyzer: {state for state, _ in (await jobs(engine, analyzer)).values()}
            for analyzer in ("toy", "clap")
        }
        return states if states == {"toy": {"done"}, "clap": {"pending"}} else None

    await eventually(toy_done_clap_waiting, what="the toy analyzer done, CLAP waiting")

    async def unavailable():
        clap = await clap_status(client)
        return clap if clap["state"] == "unavailable" else None

    clap = await eventually(unavailable, what="CLAP unavailable while the hub is down")
    assert "503" in clap["reason"]
    assert "trying again" in clap["reason"]
    await eventually(lambda: _more_than(2, hub.requests), what="the download tried again")

    hub.down = False
    await eventually(lambda: settled(engine, 1), timeout=120, what="CLAP once the hub is back")
    await all_done(engine, "clap", 1)
    assert (await clap_status(client))["state"] == "ready"


async def test_offline_clap_is_unavailable_and_says_why(hub, fast_host, monkeypatch):
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets
    client = await fast_host(CLAP)

    async def unavailable():
        clap = await clap_status(client)
        return clap if clap["state"] == "unavailable" else None

    clap = await eventually(unavailable, what="CLAP unavailable")
    assert "HF_HUB_OFFLINE" in clap["reason"] and "[clap] model" in clap["reason"]
    assert hub.requests == []
    assert (await client.get("/healthz")).status == 200


async def _more_than(count: int, requests: list[str]) -> bool:
    return len(requests) > count


async def _clap_jobs(engine, states: set[str]) -> bool:
    return {state for state, _ in (await jobs(engine, "clap")).values()} == states
