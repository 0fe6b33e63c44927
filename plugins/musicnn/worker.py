"""What runs inside a MusiCNN worker process: load the model once, analyze tracks with it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from soundspan_plugins.musicnn.inference import MusicnnTagger
from soundspan_plugins.musicnn.network import ModelCard


@dataclass(frozen=True)
class TrackTags:
    """A track's result as it crosses back to the host: plain lists, cheap to pickle."""

    tag_probabilities: list[float]
    embedding: list[float]
    patches: int


def load_tagger(onnx_path: str, card: ModelCard, threads: int, device: str) -> MusicnnTagger:
    return MusicnnTagger(onnx_path, card, threads=threads, device=device)


def analyze_file(tagger: MusicnnTagger, path: str, batch_size: int) -> TrackTags:
    """Decode and tag one file; UnreadableAudio travels back to the host as it is."""
    analysis = tagger.analyze(Path(path), batch_size=batch_size)
    return TrackTags(
        tag_probabilities=analysis.tag_probabilities.tolist(),
        embedding=analysis.embedding.tolist(),
        patches=analysis.n_patches,
    )
