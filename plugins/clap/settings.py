"""The [clap] settings: the plugin's section of settings.toml, its defaults and types."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from soundspan_hooks import PluginSettings, WorkerCount, legacy_env
from soundspan_plugins.clap.fetching import DEFAULT_MODEL
from soundspan_plugins.shared.pool import idle_minutes_setting
from soundspan_plugins.shared.track_audio import max_audio_minutes_setting

NAME = "clap"


class ClapSettings(PluginSettings):
    model: str = Field(
        DEFAULT_MODEL,
        description="A laion-clap checkpoint on the hub (owner/repo:file.pt, downloaded into "
        "<data_dir>/models/clap), an original laion-clap .pt file, a Hugging Face model "
        "directory, or a hub model id.",
    )
    tokenizer: str | None = Field(
        None,
        description="A RoBERTa tokenizer directory, for a .pt checkpoint's text tower "
        "(default: roberta-base's, downloaded beside a hub checkpoint).",
    )
    allow_download: bool = Field(
        True,
        description="Download a hub checkpoint (in the background) or a hub model id (at "
        "start-up); false: only files already here.",
    )
    download_retry_seconds: float = Field(
        30.0,
        gt=0,
        description="Wait after a failed download before the next try; doubles each time, "
        "up to an hour.",
    )
    cache_dir: str | None = Field(None, description="Hugging Face cache (default: HF_HOME).")
    allow_unsafe_checkpoint: bool = Field(
        False,
        description="Load a .pt checkpoint that holds Python objects besides its weights, "
        "which runs code from the file (torch.load weights_only=False): only for files you "
        "trust.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where the audio tower runs; CUDA uses fp16."
    )
    precision: Literal["auto", "fp32", "int8"] = legacy_env(
        "CLAP_PRECISION",
        "auto",
        "The CPU workers' audio tower (exported to ONNX once per model): fp32 (auto), or int8, "
        "faster and smaller, checked against fp32 on this model at load (fp32 where it "
        "differs); int8 is a model version of its own (switching re-analyzes).",
    )
    workers: WorkerCount = legacy_env(
        "CLAP_WORKERS",
        "auto",
        "Analysis workers: auto, a share of the CPUs this process may use (affinity and cgroup "
        "quota) split with the other analyzers on auto, 2 on a GPU; or a number (0: remote "
        "ones only).",
    )
    threads_per_worker: int = legacy_env(
        "CLAP_THREADS_PER_WORKER", 1, "CPU threads per worker.", ge=1
    )
    sleep_interval: float = legacy_env(
        "CLAP_SLEEP_INTERVAL", 5.0, "Queue poll interval (seconds).", gt=0
    )
    max_windows: int = Field(
        12,
        ge=1,
        description="10-s windows embedded per track: up to 2 minutes all of them, longer "
        "tracks an even sample over their whole length (every 2nd, 4th, ... window).",
    )
    batch_size: int = Field(
        1,
        ge=1,
        description="10-s windows per inference batch. On CPU bigger batches are no faster and "
        "grow each worker (int8: about 330 MB at 1, 500 MB at 4; bench/RESULTS.md); on a GPU "
        "8 to 16 keep it busy.",
    )
    max_audio_minutes: float = max_audio_minutes_setting()
    idle_minutes: float = idle_minutes_setting(
        "The text tower's process stops likewise after as many minutes without a text search; "
        "the next search starts it (seconds). "
    )
