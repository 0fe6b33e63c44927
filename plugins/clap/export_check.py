"""The audio tower's export checked against torch, in a process without torch.

onnx_export.export_unchecked (torch) leaves the graph, its weights and filters in the cache
with torch's embeddings of the probe clips; here onnxruntime embeds the same clips with the
graph and the entry's record is written, so the export is trusted from then on. Loading the
graph costs the weights again and onnxruntime's arena: beside torch's imports, in the export's
own process, that was the export's peak; here it is about half of it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from soundspan_plugins.shared.files import read_cache_record, write_atomically

from .frontend import MelFrontEnd
from .inference import OnnxAudioTower, OnnxTowerFiles
from .tower_cache import (
    EXPORTER_VERSION,
    ExportedTower,
    cached_export,
    export_entry,
    forget_older_exports,
    unchecked_entry,
)
from .windows import probe_clips
from .worker import ModelSource

log = logging.getLogger(__name__)


def ensure_exported(source: ModelSource, cache_dir: Path) -> ExportedTower:
    """The cached export of `source`'s audio tower, exporting (torch, imported only then) and
    checking only what is missing."""
    if (cached := cached_export(source, cache_dir)) is not None:
        return cached
    if (checked := check_export(source, cache_dir)) is not None:
        return checked
    from .onnx_export import export_unchecked

    export_unchecked(source, cache_dir)
    if (checked := check_export(source, cache_dir)) is None:
        raise RuntimeError(f"the export of {source.model} left no entry to check")
    return checked


def awaits_check(source: ModelSource, cache_dir: Path) -> bool:
    """Whether an export of `source`'s weights is in the cache, intact, awaiting its check."""
    return _unchecked(source, cache_dir) is not None


def check_export(source: ModelSource, cache_dir: Path) -> ExportedTower | None:
    """Check the export awaiting its check against torch's embeddings, record the result and
    remove what only the check needed; None where no intact export awaits one."""
    if (unchecked := _unchecked(source, cache_dir)) is None:
        return None
    digest, graph, weights, filters, record_path = export_entry(source, cache_dir)
    reference_path, unchecked_path = unchecked_entry(graph)
    front_end = MelFrontEnd(
        np.load(filters), unchecked["fft_size"], unchecked["hop_length"], unchecked["channels"]
    )
    files = OnnxTowerFiles(graph, front_end, "fp32")
    agreement = onnx_agreement(np.load(reference_path), files)
    record = {
        key: value for key, value in unchecked.items() if not key.startswith("reference_bytes")
    }
    write_atomically(record_path, json.dumps({**record, "agreement": agreement}, indent=1) + "\n")
    for path in (unchecked_path, reference_path):
        path.unlink(missing_ok=True)
    if stale := forget_older_exports(digest, cache_dir):
        log.info("CLAP: removed %d files of an older export of these weights", len(stale))
    return ExportedTower(files, agreement)


def _unchecked(source: ModelSource, cache_dir: Path) -> dict | None:
    digest, graph, weights, filters, _ = export_entry(source, cache_dir)
    reference_path, unchecked_path = unchecked_entry(graph)
    return read_cache_record(
        unchecked_path,
        {"weights_sha256": digest, "exporter_version": EXPORTER_VERSION},
        {
            "onnx_bytes": graph,
            "onnx_weights_bytes": weights,
            "mel_filters_bytes": filters,
            "reference_bytes": reference_path,
        },
        lambda record: record,
    )


def onnx_agreement(reference: np.ndarray, files: OnnxTowerFiles) -> float:
    """The lowest cosine between torch's embeddings of the probe clips (`reference`) and the
    ONNX graph's."""
    candidate = OnnxAudioTower(files).embed_windows(probe_clips())
    return float(np.sum(reference * candidate, axis=1).min())
