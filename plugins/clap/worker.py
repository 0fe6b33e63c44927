"""What runs inside a CLAP worker process: the audio tower, loaded once, embedding tracks."""

from __future__ import annotations

from dataclasses import dataclass

from soundspan_plugins.clap.embedding import embed_selected, select_windows
from soundspan_plugins.clap.loading import LoadedClap, load_clap
from soundspan_plugins.clap.preprocessing import SAMPLE_RATE
from soundspan_plugins.shared.audio import decode_mono


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


def load_audio_tower(source: ModelSource, device: str, threads: int) -> LoadedClap:
    return load_clap(
        source.model,
        tokenizer=source.tokenizer,
        towers=("audio",),
        device=device,
        threads=threads,
        allow_download=source.allow_download,
        cache_dir=source.cache_dir,
        allow_unsafe_checkpoint=source.allow_unsafe_checkpoint,
    )


def embed_file(clap: LoadedClap, path: str, max_windows: int, batch_size: int) -> TrackEmbedding:
    """Decode a file at 48 kHz, streaming, and embed an even sample of its 10-s windows."""
    windows = select_windows(decode_mono(path, SAMPLE_RATE), max_windows)
    embedding = embed_selected(clap, windows, batch_size)
    return TrackEmbedding(embedding=embedding.tolist(), windows=len(windows))


def loaded_precision(clap: LoadedClap) -> str:
    """The dtype this worker's audio tower runs in (float32 when float16 disagreed at load)."""
    return clap.info.dtype
