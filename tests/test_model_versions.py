"""Re-analysis happens only for a real change of model, and only with the model jobs ask for.

A real host on a real PostgreSQL with the toy analyzer, whose `version` setting stands for its
model: results of version 1 are outdated once the host runs version 2.
"""

import os
import shutil

from soundspan_hooks import AnalyzerInfo
from soundspan_host.app import queue_reanalysis
from soundspan_host.client import connect
from soundspan_host.plugins import load_plugins
from soundspan_host.queue import AnalysisQueue, QueuePolicy
from soundspan_host.settings import read_settings
from soundspan_plugins.clap.versions import model_version
from tests.harness.library import analyzed_toy_library, job_versions, rows


async def test_a_new_model_version_requeues_and_an_unavailable_analyzer_never_does(
    fast_host, toy_analyzer, music_dir
):
    engine = await analyzed_toy_library(fast_host, music_dir)
    queue = AnalysisQueue(engine, QueuePolicy())

    # an analyzer that cannot load reports a version that says nothing about its results
    unavailable = AnalyzerInfo("toy", "missing", "toy", False, 3, "cpu", state="unavailable")
    await queue_reanalysis(queue, [unavailable])
    assert await job_versions(engine) == [("done", "1"), ("done", "1")]

    ready = AnalyzerInfo("toy", "2", "toy", False, 3, "cpu")
    await queue_reanalysis(queue, [ready])
    assert await job_versions(engine) == [("pending", "2"), ("pending", "2")]
    # the old results keep answering until their replacements are stored
    assert len(await rows(engine, "SELECT 1 FROM toy_results WHERE version = '1'")) == 2


async def test_a_cli_command_on_a_private_host_requeues_nothing(
    write_settings, fast_host, toy_analyzer, music_dir, tmp_path
):
    engine = await analyzed_toy_library(fast_host, music_dir)
    write_settings('[toy]\nversion = "2"\n')  # this shell's environment has another model
    settings_file = tmp_path / "settings.toml"

    async with connect(load_plugins(read_settings(settings_file))) as client:
        assert client.private
        await client.get("/api/analysis/failures")

    assert await job_versions(engine) == [("done", "1"), ("done", "1")]


async def test_a_worker_takes_only_jobs_for_its_own_model_version(
    fast_host, toy_analyzer, music_dir
):
    engine = await analyzed_toy_library(fast_host, music_dir)
    queue = AnalysisQueue(engine, QueuePolicy(), owner=f"stale:{os.getpid()}")
    await queue_reanalysis(queue, [AnalyzerInfo("toy", "2", "toy", False, 3, "cpu")])

    assert await queue.claim("toy", "1", 10) == []  # a remote worker left on the old model
    assert await queue.versions_waiting("toy", "1") == ["2"]
    claimed = await queue.claim("toy", "2", 10)
    assert {job.version for job in claimed} == {"2"} and len(claimed) == 2


def test_a_clap_model_copied_or_touched_keeps_its_version_and_new_weights_change_it(tmp_path):
    original = tmp_path / "clap"
    original.mkdir()
    (original / "config.json").write_text('{"projection_dim": 512}')
    (original / "model.safetensors").write_bytes(bytes(range(256)) * 1000)

    def version(folder):
        return model_version(str(folder), max_windows=12)

    copied = shutil.copytree(original, tmp_path / "elsewhere" / "clap")
    os.utime(copied / "model.safetensors", (1, 1))
    assert version(copied) == version(original)

    retrained = shutil.copytree(original, tmp_path / "retrained")
    with (retrained / "model.safetensors").open("r+b") as weights:
        weights.write(b"\xff")
    assert version(retrained) != version(original)
