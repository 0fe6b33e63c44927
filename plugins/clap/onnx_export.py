"""Export a CLAP audio tower (and its projection) to ONNX once per model.

The export runs in a process of its own (runtime.py) that ends with it, is checked against
torch on the probe clips, and is cached under the data dir keyed by the weights' content
hash: `clap-audio-<hash>-e<version>.onnx`, the mel filter bank beside it (`-mel.npy`), and a JSON
record written last, so an entry without its record (a crash mid-write) is rebuilt, never
trusted. An export whose embeddings are not within SAME_VERSION_MIN_COSINE of torch's is
recorded and refused: the workers then run torch.

The TorchScript exporter (`dynamo=False`) is used: it still works in torch 2.13, traces HTSAT
with a dynamic batch axis in seconds, and needs no extra package (the dynamo exporter wants
onnxscript and its dependencies only for this).

Memory, larger_clap_music's audio tower (276 MB of weights): the process peaks while
torch serializes the graph, holding the weights about three times over (its protobuf, the
serialized string, Python's bytes) beside the model. Traced without autograd, the trace keeps
no activations for a backward pass: 1.6 GiB at the peak instead of 2.1, the same graph byte for
byte. torch's reference embeddings are taken before the export, and the model is let go before
onnxruntime loads the graph for the check, so the check never holds both.
"""

from __future__ import annotations

import gc
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from soundspan_plugins.shared.files import (
    file_facts,
    move_into_place,
    temporary_path,
    write_atomically,
)
from soundspan_plugins.shared.memory import return_freed_memory

from .embedding import embed_windows
from .frontend import MelFrontEnd
from .inference import INPUT_NAME, OUTPUT_NAME, OnnxAudioTower, OnnxTowerFiles
from .loading import LoadedClap, load_clap
from .tower_cache import EXPORTER_VERSION, ExportedTower, cached_export, export_entry
from .windows import probe_clips
from .worker import ModelSource

log = logging.getLogger(__name__)

OPSET = 17


def ensure_exported(source: ModelSource, cache_dir: Path) -> ExportedTower:
    """The cached export of `source`'s audio tower, exporting (and checking) only if needed."""
    if (cached := cached_export(source, cache_dir)) is not None:
        return cached
    digest, graph, filters, record_path = export_entry(source, cache_dir)

    log.info("CLAP: exporting the audio tower of %s to ONNX (once) ...", source.model)
    clap = load_clap(
        source.model,
        towers=("audio",),
        allow_download=source.allow_download,
        cache_dir=source.cache_dir,
        allow_unsafe_checkpoint=source.allow_unsafe_checkpoint,
    )
    front_end = front_end_of(clap)
    reference = embed_windows(clap, probe_clips())
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial_graph = temporary_path(cache_dir, ".onnx")
    partial_filters = temporary_path(cache_dir, ".npy")
    try:
        export_audio_tower(clap, partial_graph)
        del clap  # the check below loads the graph: never both in memory at once
        gc.collect()
        return_freed_memory()
        with partial_filters.open("wb") as handle:
            np.save(handle, front_end.mel_filters)
        exported = OnnxTowerFiles(partial_graph, front_end, "fp32")
        agreement = onnx_agreement(reference, exported)
        for partial, final in ((partial_graph, graph), (partial_filters, filters)):
            move_into_place(partial, final)
    finally:
        partial_graph.unlink(missing_ok=True)
        partial_filters.unlink(missing_ok=True)
    record = {
        "weights_sha256": digest,
        "model": source.model,
        "exporter_version": EXPORTER_VERSION,
        "torch": torch.__version__,
        **file_facts({"onnx_bytes": graph, "mel_filters_bytes": filters}),
        "fft_size": front_end.fft_size,
        "hop_length": front_end.hop_length,
        "channels": front_end.channels,
        "agreement": agreement,
    }
    write_atomically(record_path, json.dumps(record, indent=1) + "\n")
    return ExportedTower(OnnxTowerFiles(graph, front_end, "fp32"), agreement)


class _AudioTowerGraph(torch.nn.Module):
    """The audio tower as the workers run it: mel features in, unit-length embeddings out.

    is_longer is all False: no clip is longer than 10 s (see embedding.embed_windows)."""

    def __init__(self, clap: LoadedClap) -> None:
        super().__init__()
        self.audio_model = clap.model.audio_model
        self.audio_projection = clap.model.audio_projection

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        is_longer = torch.zeros((input_features.shape[0], 1), dtype=torch.bool)
        pooled = self.audio_model(input_features=input_features, is_longer=is_longer).pooler_output
        return F.normalize(self.audio_projection(pooled), dim=-1)


def export_audio_tower(clap: LoadedClap, path: Path) -> None:
    """Write `clap`'s audio tower and projection to `path` as ONNX, any batch size.

    Traced under no_grad: with autograd on, the traced run's output keeps every activation for
    a backward pass until the export ends (half a GiB for HTSAT); the graph is the same."""
    example = torch.from_numpy(front_end_of(clap)(probe_clips()[:2]))
    with warnings.catch_warnings(), torch.no_grad():
        # the tracer's notes on HTSAT's shape checks (constant for 10-s clips) and the
        # TorchScript exporter's deprecation notice: nothing a user can act on
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _AudioTowerGraph(clap).eval(),
            (example,),
            str(path),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
        )


def front_end_of(clap: LoadedClap) -> MelFrontEnd:
    """The numpy front end that computes what `clap`'s checked feature extractor computes."""
    extractor = clap.feature_extractor
    if extractor is None:
        raise ValueError("this CLAP model was loaded without its audio tower")
    fused = extractor.truncation == "fusion"  # HTK filters, 4 channels; else Slaney, 1
    return MelFrontEnd(
        mel_filters=extractor.mel_filters if fused else extractor.mel_filters_slaney,
        fft_size=extractor.fft_window_size,
        hop_length=extractor.hop_length,
        channels=4 if fused else 1,
    )


def onnx_agreement(reference: np.ndarray, files: OnnxTowerFiles) -> float:
    """The lowest cosine between torch's embeddings of the probe clips (`reference`) and the
    ONNX graph's."""
    candidate = OnnxAudioTower(files).embed_windows(probe_clips())
    return float(np.sum(reference * candidate, axis=1).min())
