"""The [musicnn] settings: the plugin's section of settings.toml, its defaults and types."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from soundspan_hooks import PluginSettings, WorkerCount, legacy_env
from soundspan_plugins.shared.pool import idle_minutes_setting
from soundspan_plugins.shared.track_audio import max_audio_minutes_setting

NAME = "musicnn"


class MusicnnSettings(PluginSettings):
    model: Literal["MSD_musicnn", "MTT_musicnn"] = Field(
        "MSD_musicnn", description="Trained weights: MSD (50 tags incl. genres) or MTT."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where inference runs; auto takes CUDA when onnxruntime-gpu can."
    )
    precision: Literal["auto", "fp32", "int8"] = Field(
        "auto",
        description="int8 (quantized once on this machine, checked against fp32 on the "
        "calibration clips) runs the front end faster on CPUs with fast int8 (VNNI, arm64 dot "
        "product). Its tags differ from fp32's by up to ~0.015 on held-out music, so auto "
        "keeps fp32 and int8 is a model version of its own (switching re-analyzes).",
    )
    workers: WorkerCount = legacy_env(
        "MUSICNN_WORKERS",
        "auto",
        "Worker processes: auto, a share of the CPUs this process may use (affinity and "
        "cgroup quota) split with the other analyzers on auto, 2 on a GPU; or a number (0: "
        "leave MusiCNN to remote workers).",
    )
    threads_per_worker: int = legacy_env(
        "MUSICNN_THREADS_PER_WORKER", 1, "CPU threads each worker process uses.", ge=1
    )
    sleep_interval: float = legacy_env(
        "MUSICNN_SLEEP_INTERVAL", 5.0, "Seconds between looks at the queue.", gt=0
    )
    batch_size: int = Field(
        1,
        ge=1,
        description="3-s patches per inference batch. Bigger batches are no faster on CPU and "
        "grow each worker by about 33 MB a patch (bench/RESULTS.md).",
    )
    top_tags: int = Field(5, ge=1, le=50, description="How many top tags a track keeps.")
    max_audio_minutes: float = max_audio_minutes_setting()
    idle_minutes: float = idle_minutes_setting()
