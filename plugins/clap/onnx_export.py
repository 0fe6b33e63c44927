"""Export a CLAP audio tower (and its projection) to ONNX once per model, in the host process.

The export runs where torch already is (the host keeps it for the text tower), is checked
against torch on the probe clips, and is cached under the data dir keyed by the weights' content
hash: `clap-audio-<hash>-e<version>.onnx`, the mel filter bank beside it (`-mel.npy`), and a JSON
record written last, so an entry without its record (a crash mid-write) is rebuilt, never
trusted. An export whose embeddings are not within SAME_VERSION_MIN_COSINE of torch's is
recorded and refused: the workers then run torch.

The TorchScript exporter (`dynamo=False`) is used: it still works in torch 2.13, traces HTSAT
with a dynamic batch axis in seconds, and needs no extra package (the dynamo exporter wants
onnxscript and its dependencies only for this).
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from soundspan_plugins.shared.files import (
    file_facts,
    move_into_place,
    read_cache_record,
    temporary_path,
    write_atomically,
)

from .embedding import embed_windows
from .frontend import MelFrontEnd
from .inference import INPUT_NAME, OUTPUT_NAME, OnnxAudioTower, OnnxTowerFiles
from .loading import LoadedClap, load_clap
from .versions import SAME_VERSION_MIN_COSINE, weights_digest
from .windows import probe_clips
from .worker import ModelSource

log = logging.getLogger(__name__)

EXPORTER_VERSION = 1  # bump when the exported graph or front end changes: entries are redone
OPSET = 17


@dataclass(frozen=True)
class ExportedTower:
    """A cached export and how its embeddings of the probe clips compare with torch's."""

    files: OnnxTowerFiles
    agreement: float  # the lowest cosine between ONNX's and torch's probe embeddings

    @property
    def accepted(self) -> bool:
        return self.agreement >= SAME_VERSION_MIN_COSINE


def _cache_entry(source: ModelSource, cache_dir: Path) -> tuple[str, Path, Path, Path]:
    """The weights' digest, and the graph, mel filters and record of their cache entry."""
    digest = weights_digest(source.model)
    stem = f"clap-audio-{digest[:16]}-e{EXPORTER_VERSION}"
    return (
        digest,
        cache_dir / f"{stem}.onnx",
        cache_dir / f"{stem}-mel.npy",
        cache_dir / f"{stem}.json",
    )


def cached_export(source: ModelSource, cache_dir: Path) -> ExportedTower | None:
    """The export of `source`'s audio tower already in the cache, intact; None if there is
    none (then ensure_exported makes it: best in a process of its own, see runtime.py)."""
    digest, graph, filters, record_path = _cache_entry(source, cache_dir)
    return read_cache_record(
        record_path,
        {"weights_sha256": digest, "exporter_version": EXPORTER_VERSION},
        {"onnx_bytes": graph, "mel_filters_bytes": filters},
        lambda record: ExportedTower(
            OnnxTowerFiles(graph, _front_end(record, filters), "fp32"), record["agreement"]
        ),
    )


def ensure_exported(source: ModelSource, cache_dir: Path) -> ExportedTower:
    """The cached export of `source`'s audio tower, exporting (and checking) only if needed."""
    if (cached := cached_export(source, cache_dir)) is not None:
        return cached
    digest, graph, filters, record_path = _cache_entry(source, cache_dir)

    log.info("CLAP: exporting the audio tower of %s to ONNX (once) ...", source.model)
    clap = load_clap(
        source.model,
        towers=("audio",),
        allow_download=source.allow_download,
        cache_dir=source.cache_dir,
        allow_unsafe_checkpoint=source.allow_unsafe_checkpoint,
    )
    front_end = front_end_of(clap)
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial_graph = temporary_path(cache_dir, ".onnx")
    partial_filters = temporary_path(cache_dir, ".npy")
    try:
        export_audio_tower(clap, partial_graph)
        with partial_filters.open("wb") as handle:
            np.save(handle, front_end.mel_filters)
        exported = OnnxTowerFiles(partial_graph, front_end, "fp32")
        agreement = onnx_agreement(clap, exported)
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
    """Write `clap`'s audio tower and projection to `path` as ONNX, any batch size."""
    example = torch.from_numpy(front_end_of(clap)(probe_clips()[:2]))
    with warnings.catch_warnings():
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


def onnx_agreement(clap: LoadedClap, files: OnnxTowerFiles) -> float:
    """The lowest cosine between torch's and the ONNX graph's embeddings of the probe clips."""
    clips = probe_clips()
    reference = embed_windows(clap, clips)
    candidate = OnnxAudioTower(files).embed_windows(clips)
    return float(np.sum(reference * candidate, axis=1).min())


def _front_end(record: dict, filters: Path) -> MelFrontEnd:
    """The front end an export's record describes, with its stored filter bank."""
    return MelFrontEnd(
        np.load(filters), record["fft_size"], record["hop_length"], record["channels"]
    )
