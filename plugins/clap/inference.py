"""The CLAP audio tower exported to ONNX, run by onnxruntime: what a CPU worker holds.

It imports numpy and onnxruntime only, so a worker process never pays torch's memory or its
start-up. The graph takes the mel features (frontend.py) and returns unit-length embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime

from soundspan_plugins.shared.memory import return_freed_memory

from .frontend import MelFrontEnd
from .windows import check_clips, unit

INPUT_NAME = "input_features"
OUTPUT_NAME = "embedding"


@dataclass(frozen=True)
class OnnxTowerFiles:
    """What a worker loads: the graph, its front end, and the precision it runs in."""

    graph: Path
    front_end: MelFrontEnd
    precision: str  # "fp32" or "int8"


class OnnxAudioTower:
    """One onnxruntime session of an exported audio tower; make one per worker process."""

    def __init__(self, files: OnnxTowerFiles, threads: int = 1) -> None:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        self.front_end = files.front_end
        self.precision = files.precision
        self._session = onnxruntime.InferenceSession(
            str(files.graph), options, providers=["CPUExecutionProvider"]
        )
        return_freed_memory()  # the graph file's copy of the weights

    def embed_windows(self, windows: Sequence[np.ndarray], batch_size: int = 4) -> np.ndarray:
        """Unit-length float32 [n, dim] embeddings of clips of at most 10 s each (48 kHz mono)."""
        check_clips(windows)
        if not windows:
            raise ValueError("no clips to embed")
        batches = [
            self._session.run(
                [OUTPUT_NAME], {INPUT_NAME: self.front_end(windows[start : start + batch_size])}
            )[0]
            for start in range(0, len(windows), batch_size)
        ]
        return_freed_memory()
        return np.concatenate(batches).astype(np.float32, copy=False)

    def embed_selected(self, windows: Sequence[np.ndarray], batch_size: int = 4) -> np.ndarray:
        """The unit-length mean of these windows' embeddings: a track's embedding."""
        return unit(self.embed_windows(windows, batch_size).mean(axis=0))
