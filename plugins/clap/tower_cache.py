"""The audio tower's cache entries (onnx_export.py and precision.py write them), read without
torch: the host tells from them whether a first start must export (and quantize) the tower, in
a process of its own, before it imports torch for the text tower (runtime.py)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from soundspan_plugins.shared.files import read_cache_record

from .frontend import MelFrontEnd
from .inference import OnnxTowerFiles
from .versions import INT8_RECIPE, SAME_VERSION_MIN_COSINE, weights_digest
from .worker import ModelSource

# bump when the exported graph, its files or the front end change: entries are redone.
# 2: the weights in a file of their own beside the graph (onnx_export.py)
EXPORTER_VERSION = 2


@dataclass(frozen=True)
class ExportedTower:
    """A cached export and how its embeddings of the probe clips compare with torch's."""

    files: OnnxTowerFiles
    agreement: float  # the lowest cosine between ONNX's and torch's probe embeddings

    @property
    def accepted(self) -> bool:
        return self.agreement >= SAME_VERSION_MIN_COSINE


def export_entry(source: ModelSource, cache_dir: Path) -> tuple[str, Path, Path, Path, Path]:
    """The weights' digest, and the graph, its weights, mel filters and record of their cache
    entry."""
    digest = weights_digest(source.model)
    stem = f"clap-audio-{digest[:16]}-e{EXPORTER_VERSION}"
    return (
        digest,
        cache_dir / f"{stem}.onnx",
        cache_dir / f"{stem}-weights.bin",
        cache_dir / f"{stem}-mel.npy",
        cache_dir / f"{stem}.json",
    )


def unchecked_entry(graph: Path) -> tuple[Path, Path]:
    """Beside an export's `graph` while it awaits its check: torch's embeddings of the probe
    clips, and the record of what was exported (onnx_export.export_unchecked writes both,
    export_check.check_export reads and then removes them)."""
    return graph.with_name(f"{graph.stem}-reference.npy"), graph.with_name(
        f"{graph.stem}-unchecked.json"
    )


def forget_older_exports(digest: str, cache_dir: Path) -> list[Path]:
    """Remove the files an older exporter version left for these weights (its graph, weights,
    filters, int8 graph and records: hundreds of MB the cache would otherwise keep for good);
    the files removed."""
    current = f"clap-audio-{digest[:16]}-e{EXPORTER_VERSION}"
    stale = [
        path
        for path in cache_dir.glob(f"clap-audio-{digest[:16]}-e*")
        if not path.name.startswith((f"{current}.", f"{current}-"))
    ]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def cached_export(source: ModelSource, cache_dir: Path) -> ExportedTower | None:
    """The export of `source`'s audio tower already in the cache, intact and checked; None if
    there is none (then export_check.ensure_exported makes it: best in processes of their own)."""
    digest, graph, weights, filters, record_path = export_entry(source, cache_dir)
    return read_cache_record(
        record_path,
        {"weights_sha256": digest, "exporter_version": EXPORTER_VERSION},
        {"onnx_bytes": graph, "onnx_weights_bytes": weights, "mel_filters_bytes": filters},
        lambda record: ExportedTower(
            OnnxTowerFiles(graph, _front_end(record, filters), "fp32"), record["agreement"]
        ),
    )


def int8_entry(fp32: OnnxTowerFiles) -> tuple[OnnxTowerFiles, Path]:
    """The int8 graph beside `fp32`'s, and the record of its check."""
    stem = f"{fp32.graph.stem}-{INT8_RECIPE}"
    int8 = replace(fp32, graph=fp32.graph.with_name(f"{stem}.onnx"), precision="int8")
    return int8, fp32.graph.with_name(f"{stem}.json")


def cached_int8(fp32: OnnxTowerFiles) -> tuple[OnnxTowerFiles, float] | None:
    """The cached int8 graph of `fp32` and its lowest probe cosine to fp32; None if none."""
    int8, record_path = int8_entry(fp32)
    agreement = read_cache_record(
        record_path,
        {"recipe": INT8_RECIPE},
        {"source_onnx_bytes": fp32.graph, "int8_onnx_bytes": int8.graph},
        lambda record: float(record["agreement"]),
    )
    return None if agreement is None else (int8, agreement)


def tower_cached(source: ModelSource, cache_dir: Path, precision: str) -> bool:
    """Whether choosing the tower for `[clap] precision` = `precision` finds all it needs in
    the cache (an export, and for int8 its quantized graph), so no torch step must run."""
    exported = cached_export(source, cache_dir)
    if exported is None:
        return False
    return precision != "int8" or not exported.accepted or cached_int8(exported.files) is not None


def _front_end(record: dict, filters: Path) -> MelFrontEnd:
    """The front end an export's record describes, with its stored filter bank."""
    return MelFrontEnd(
        np.load(filters), record["fft_size"], record["hop_length"], record["channels"]
    )
