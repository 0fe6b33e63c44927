"""An analyzer's model starts in the background: the host answers at once, CLAP's export runs in
a process of its own that ends, and re-analysis for a new model waits until the model loads.

Real hosts on a real PostgreSQL: the toy analyzer (whose state a test sets through its
`described_as` file) and a tiny CLAP built and saved in the real format.
"""

import asyncio
import json

import numpy as np
import psutil

from soundspan_hooks import HOST
from soundspan_host.app import STARTED_POLL_SECONDS
from soundspan_plugins.clap.runtime import RUNTIME
from tests.harness.library import (
    all_done,
    analyzed_toy_library,
    eventually,
    job_versions,
    settled,
    write_wave,
)


async def test_a_new_model_is_queued_for_only_once_it_has_loaded(
    fast_host, toy_analyzer, music_dir, tmp_path
):
    engine = await analyzed_toy_library(fast_host, music_dir)
    described = tmp_path / "toy-described-as.json"
    described.write_text(json.dumps({"state": "loading"}))
    client = await fast_host(f'[toy]\nversion = "2"\ndescribed_as = "{described}"\n')
    assert (await client.get("/healthz")).status == 200
    assert await job_versions(engine) == [("done", "1"), ("done", "1")]

    # a model that does not load says nothing about the results: they stay
    described.write_text(json.dumps({"state": "unavailable", "reason": "no weights"}))
    await asyncio.sleep(3 * STARTED_POLL_SECONDS)  # the host looks at its state meanwhile
    assert await job_versions(engine) == [("done", "1"), ("done", "1")]

    # until it loads after all (a download that retried): then its tracks are redone
    described.write_text(json.dumps({}))

    async def redone() -> bool:
        return await job_versions(engine) == [("done", "2"), ("done", "2")]

    await eventually(redone, what="the re-analysis with version 2")


async def test_clap_prepares_in_the_background_and_its_export_process_ends(
    fast_host, monkeypatch, tmp_path, music_dir
):
    from tests.harness.clap_models import save_tiny_clap

    model = save_tiny_clap(tmp_path / "tiny-clap", projection_dim=512)
    monkeypatch.setenv("SOUNDSPAN_CLAP__ENABLED", "true")
    monkeypatch.setenv("SOUNDSPAN_CLAP__MODEL", str(model))
    write_wave(music_dir / "noise.wav", np.random.default_rng(5).uniform(-0.5, 0.5, 96000), 48000)
    client = await fast_host("[clap]\nworkers = 1\n")
    host = client.app[HOST]
    helpers_seen: set[int] = set()
    answered_while_exporting = []

    async def ready() -> bool:
        helpers_seen.update(child.pid for child in psutil.Process().children())
        clap = host.analyzers["clap"].info()
        assert clap.state in ("loading", "ready"), clap.reason
        # the export spawns a process that imports torch: seconds, seen by many looks
        if "exporting the audio tower" in (clap.detail or "") and not answered_while_exporting:
            assert clap.state == "loading" and clap.detail.startswith("preparing the model: ")
            # before the text tower: the export's peak never adds to the host's torch
            assert client.app[RUNTIME].text_tower is None
            answered_while_exporting.append((await client.get("/healthz")).status)
        return clap.state == "ready"

    await eventually(ready, timeout=180, what="CLAP ready")
    assert answered_while_exporting == [200]
    # the export ran in a process of its own, gone (with its memory) once it was done
    assert helpers_seen - {child.pid for child in psutil.Process().children()}
    assert host.analyzers["clap"].info().detail is None
    await eventually(lambda: settled(host.engine, 1), timeout=120, what="CLAP's analysis")
    await all_done(host.engine, "clap", 1)
