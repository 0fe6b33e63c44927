"""What runs inside a CLAP worker process: the audio tower, loaded once, embedding tracks.

On CPU the tower is the ONNX export (inference.py): the process imports numpy and
onnxruntime, never torch or transformers. torch is imported only for the torch tower (on
CUDA, or where the host refused the export).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from soundspan_plugins.clap.inference import OnnxAudioTower, OnnxTowerFiles
from soundspan_plugins.clap.windows import SAMPLE_RATE, select_windows
from soundspan_plugins.shared.track_audio import TrackAudio


@dataclass(frozen=True)
class ModelSource:
    """Where the weights come from, as the [clap] settings say: picklable for the workers."""

    model: str
    tokenizer: str | None
    allow_download: bool
    cache_dir: str | None
    allow_unsafe_checkpoint: bool


@dataclass(frozen=True)
class TrackEmbedding:
    embedding: list[float]
    windows: int
    decoder: str  # which decoder read the file: "FFmpeg", or "libsndfile" where FFmpeg refused
    analyzed_seconds: float
    capped: bool  # the file holds more audio than the analyzer's cap; the rest was not read


class AudioTower(Protocol):
    precision: str

    def embed_selected(self, windows: Sequence[np.ndarray], batch_size: int) -> np.ndarray: ...


class _TorchAudioTower:
    """The torch audio tower behind the same two members as the ONNX one."""

    def __init__(self, clap: Any) -> None:
        self.clap = clap
        self.precision = f"torch {clap.info.dtype}"

    def embed_selected(self, windows: Sequence[np.ndarray], batch_size: int) -> np.ndarray:
        from soundspan_plugins.clap.embedding import embed_selected

        return embed_selected(self.clap, windows, batch_size)


def load_audio_tower(
    source: ModelSource, onnx: OnnxTowerFiles | None, device: str, threads: int
) -> AudioTower:
    """The ONNX tower when the host exported one (`onnx`), else torch's."""
    if onnx is not None:
        return OnnxAudioTower(onnx, threads=threads)
    from soundspan_plugins.clap.loading import load_clap

    clap = load_clap(
        source.model,
        tokenizer=source.tokenizer,
        towers=("audio",),
        device=device,
        threads=threads,
        allow_download=source.allow_download,
        cache_dir=source.cache_dir,
        allow_unsafe_checkpoint=source.allow_unsafe_checkpoint,
    )
    return _TorchAudioTower(clap)


def embed_file(
    tower: AudioTower,
    path: str,
    max_windows: int,
    batch_size: int,
    max_seconds: float | None = None,
) -> TrackEmbedding:
    """Decode a file at 48 kHz, streaming, its first `max_seconds` at most, and embed an even
    sample of its 10-s windows."""
    audio = TrackAudio(path, SAMPLE_RATE, max_seconds)
    windows = select_windows(audio, max_windows)
    embedding = tower.embed_selected(windows, batch_size)
    return TrackEmbedding(
        embedding=embedding.tolist(),
        windows=len(windows),
        decoder=audio.decoder,
        analyzed_seconds=audio.seconds,
        capped=audio.capped,
    )


def loaded_precision(tower: AudioTower) -> str:
    """What this worker's tower runs: fp32 or int8 (ONNX), or torch float32 / float16 (CUDA,
    float32 when float16 disagreed at load)."""
    return tower.precision
