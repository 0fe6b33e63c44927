"""What runs inside a MusiCNN worker process: load the model once, analyze tracks with it."""

from __future__ import annotations

from dataclasses import dataclass

from soundspan_plugins.musicnn.frontend import SAMPLE_RATE, patch_batches
from soundspan_plugins.musicnn.inference import MusicnnTagger
from soundspan_plugins.musicnn.network import ModelCard
from soundspan_plugins.shared.track_audio import TrackAudio


@dataclass(frozen=True)
class TrackTags:
    """A track's result as it crosses back to the host: plain lists, cheap to pickle."""

    tag_probabilities: list[float]
    embedding: list[float]
    patches: int
    decoder: str  # which decoder read the file: "FFmpeg", or "libsndfile" where FFmpeg refused
    analyzed_seconds: float
    capped: bool  # the file holds more audio than the analyzer's cap; the rest was not read


def load_tagger(onnx_path: str, card: ModelCard, threads: int, device: str) -> MusicnnTagger:
    return MusicnnTagger(onnx_path, card, threads=threads, device=device)


def analyze_file(
    tagger: MusicnnTagger, path: str, batch_size: int, max_seconds: float | None = None
) -> TrackTags:
    """Decode and tag one file, its first `max_seconds` at most; UnreadableAudio travels back
    to the host as it is."""
    audio = TrackAudio(path, SAMPLE_RATE, max_seconds)
    analysis = tagger.summarize(patch_batches(audio, batch_size))
    return TrackTags(
        tag_probabilities=analysis.tag_probabilities.tolist(),
        embedding=analysis.embedding.tolist(),
        patches=analysis.n_patches,
        decoder=audio.decoder,
        analyzed_seconds=audio.seconds,
        capped=audio.capped,
    )
