"""Run the converted musicnn model with onnxruntime over a track's patches.

The original extractor's per-track summary is the mean over 3-second patches; that is what a
track's tags and embedding are here too. Patches stream in batches, so a long track never
holds more than one batch of input in memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .frontend import iter_patch_batches
from .network import EMBEDDING_NAME, INPUT_NAME, TAGGRAM_NAME, ModelCard


@dataclass(frozen=True)
class TrackAnalysis:
    """A track's musicnn summary: mean tag probabilities and mean penultimate embedding."""

    tag_probabilities: np.ndarray  # [n_tags] float32, mean of the per-patch sigmoid outputs
    embedding: np.ndarray  # [200] float32, mean of the per-patch penultimate layer
    n_patches: int

    def top_tags(self, tags: tuple[str, ...], count: int = 5) -> list[tuple[str, float]]:
        """The ``count`` most likely tags with their probabilities, best first."""
        order = np.argsort(-self.tag_probabilities, kind="stable")[:count]
        return [(tags[i], float(self.tag_probabilities[i])) for i in order]


def cuda_available() -> bool:
    """Whether onnxruntime can run on a GPU here (onnxruntime-gpu and a driver); False without
    onnxruntime (the musicnn extra), which the plugin reports as such."""
    try:
        import onnxruntime
    except ImportError:
        return False
    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


class MusicnnTagger:
    """One onnxruntime session of a musicnn model; not thread-safe, make one per worker."""

    def __init__(
        self, onnx_path: Path | str, card: ModelCard, threads: int = 1, device: str = "cpu"
    ) -> None:
        import onnxruntime  # the musicnn extra's: imported to run, never to start the host

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        self.card = card
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            providers.insert(0, "CUDAExecutionProvider")
        self._session = onnxruntime.InferenceSession(str(onnx_path), options, providers=providers)

    def run(self, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[n, 187, 96] patches -> (taggram [n, n_tags], embeddings [n, 200])."""
        taggram, embedding = self._session.run(
            [TAGGRAM_NAME, EMBEDDING_NAME], {INPUT_NAME: np.asarray(patches, np.float32)}
        )
        return taggram, embedding

    def analyze(self, path: Path | str, batch_size: int = 16) -> TrackAnalysis:
        """Decode ``path`` and summarise it; raises ``UnreadableAudio`` for bad files."""
        return self.summarize(iter_patch_batches(path, batch_size))

    def summarize(self, patch_batches: Iterable[np.ndarray]) -> TrackAnalysis:
        """The mean of the model's answers over a track's patch batches (frontend.py's)."""
        tag_sum = np.zeros(len(self.card.tags), np.float64)
        embedding_sum = np.zeros(self.card.embedding_dim, np.float64)
        n_patches = 0
        for patches in patch_batches:
            taggram, embedding = self.run(patches)
            tag_sum += taggram.sum(axis=0, dtype=np.float64)
            embedding_sum += embedding.sum(axis=0, dtype=np.float64)
            n_patches += len(patches)
        return TrackAnalysis(
            tag_probabilities=(tag_sum / n_patches).astype(np.float32),
            embedding=(embedding_sum / n_patches).astype(np.float32),
            n_patches=n_patches,
        )
