"""Which audio tower the workers run: ONNX float32, ONNX int8, or torch.

int8 is onnxruntime's dynamic quantization of the graph's MatMul and Gemm weights (the linear
layers: nearly all of HTSAT's arithmetic), int8 weights and per-batch uint8 activations. No
trained CLAP weights are reachable where soundspan is tested, so the int8 graph is checked on
the user's own weights: made once per model, it embeds the probe clips (windows.probe_clips:
a chord with noise, loud noise, a quiet tone) beside the float32 graph, and is used only when
every cosine is at least INT8_MIN_COSINE; else the workers run float32 and the status says why.
The int8 file and its check are cached beside the float32 export.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from soundspan_plugins.shared.files import (
    file_facts,
    move_into_place,
    temporary_path,
    write_atomically,
)

from . import versions
from .export_check import awaits_check, ensure_exported
from .inference import OnnxAudioTower, OnnxTowerFiles
from .tower_cache import cached_export, cached_int8, int8_entry
from .versions import INT8_RECIPE, SAME_VERSION_MIN_COSINE
from .windows import probe_clips
from .worker import ModelSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TowerChoice:
    """What the workers load: an ONNX graph (None: torch), and why not what was asked for."""

    onnx: OnnxTowerFiles | None
    detail: str | None = None  # one line for people: why a precision or ONNX was refused


def choose_tower(
    source: ModelSource,
    cache_dir: Path,
    setting: str,
    device: str,
    min_cosine: float | None = None,
) -> TowerChoice:
    """The tower for `[clap] precision` = `setting` on `device`: int8 only when asked for and
    within `min_cosine` (versions.INT8_MIN_COSINE, read at each call) of float32 on the probe clips;
    torch on CUDA (its float16 tower is the one checked on a real GPU), or where the ONNX
    export disagrees with torch."""
    if device == "cuda":
        note = None
        if setting == "int8":
            note = "[clap] precision = int8 is for CPUs; running torch float16 on CUDA"
        return TowerChoice(None, note)
    try:
        exported = ensure_exported(source, cache_dir)  # torch only where no export is cached
    except Exception as error:
        # the tracer's and onnxruntime's errors have no common base; torch still runs the tower
        return torch_instead(f"exporting the audio tower to ONNX failed ({error})")
    if not exported.accepted:
        return torch_instead(
            f"the ONNX audio tower disagreed with torch (cosine {exported.agreement:.5f} < "
            f"{SAME_VERSION_MIN_COSINE})"
        )
    if setting != "int8":
        return TowerChoice(exported.files)
    min_cosine = versions.INT8_MIN_COSINE if min_cosine is None else min_cosine
    try:
        int8, agreement = ensure_int8(exported.files)
    except Exception as error:
        note = f"quantizing the CLAP audio tower to int8 failed ({error}); running fp32"
        log.warning("CLAP: %s", note)
        return TowerChoice(exported.files, note)
    if agreement < min_cosine:
        note = (
            f"int8 refused: its embeddings of the probe clips differ from fp32's (cosine "
            f'{agreement:.4f} < {min_cosine}); running fp32. Set [clap] precision = "fp32" '
            f"to skip this check."
        )
        log.warning("CLAP: %s", note)
        return TowerChoice(exported.files, note)
    log.info("CLAP: int8 within cosine %.4f of fp32 on the probe clips", agreement)
    return TowerChoice(int8)


@dataclass(frozen=True)
class FirstExport:
    """What a first start's export process (export_first) found."""

    on_gpu: bool = False  # `auto` found a GPU: the workers run torch there, nothing to check
    failed: str | None = None  # the export's error: the workers run torch


def export_first(source: ModelSource, cache_dir: Path, device: str) -> FirstExport:
    """On a first start, in a process of its own that ends before the check: export the audio
    tower unless an export is cached (checked or awaiting its check), for `[clap] device` =
    `device`. choose_tower then checks it (and quantizes it, for int8) in a process without
    torch (runtime.py): the check beside torch's imports made the export's peak."""
    import torch

    if device == "auto" and torch.cuda.is_available():
        return FirstExport(on_gpu=True)
    if cached_export(source, cache_dir) is None and not awaits_check(source, cache_dir):
        from .onnx_export import export_unchecked

        try:
            export_unchecked(source, cache_dir)
        except Exception as error:  # the tracer's errors have no common base
            return FirstExport(failed=str(error))
    return FirstExport()


def torch_instead(why: str) -> TowerChoice:
    note = f"{why}; the workers run the torch audio tower"
    log.warning("CLAP: %s", note)
    return TowerChoice(None, note)


def ensure_int8(fp32: OnnxTowerFiles) -> tuple[OnnxTowerFiles, float]:
    """The cached int8 graph beside `fp32`'s and its lowest probe cosine to fp32, quantizing
    and checking only if needed."""
    if (cached := cached_int8(fp32)) is not None:
        return cached
    int8, record_path = int8_entry(fp32)
    int8_path = int8.graph
    # imported here: seconds and memory the host pays only where it quantizes
    from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

    log.info("CLAP: quantizing %s to int8 (once) ...", fp32.graph.name)
    prepared = temporary_path(fp32.graph.parent, ".onnx")
    prepared_weights = prepared.with_name(f"{prepared.name}.data")
    partial = temporary_path(fp32.graph.parent, ".onnx")
    try:
        with _quiet_quantizer():
            # the fp32 graph keeps its weights in a file of its own (onnx_export.py); so does
            # the optimized graph the quantizer reads, which it writes beside itself
            quant_pre_process(
                str(fp32.graph),
                str(prepared),
                skip_symbolic_shape=True,
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                external_data_location=prepared_weights.name,
            )
            quantize_dynamic(
                str(prepared),
                str(partial),
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul", "Gemm"],
            )
        agreement = probe_agreement(fp32, replace(int8, graph=partial))
        move_into_place(partial, int8_path)
    finally:
        for written in (prepared, prepared_weights, partial):
            written.unlink(missing_ok=True)
    record = {
        "recipe": INT8_RECIPE,
        "source_onnx": fp32.graph.name,
        **file_facts({"source_onnx_bytes": fp32.graph, "int8_onnx_bytes": int8_path}),
        "agreement": agreement,
    }
    write_atomically(record_path, json.dumps(record, indent=1) + "\n")
    return int8, agreement


@contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """onnxruntime's quantizer logs a line per node on the root logger ("Quantization
    parameters for tensor ... not specified"): hundreds of INFO lines in the host's log. A
    filter on the root logger sees only what is logged on the root itself, not the host's own
    loggers' records, which pass through its handlers unfiltered."""
    from onnxruntime import quantization

    root = logging.getLogger()
    quantizer = str(Path(quantization.__file__).parent)

    def from_elsewhere(record: logging.LogRecord) -> bool:
        return not record.pathname.startswith(quantizer) or record.levelno >= logging.WARNING

    root.addFilter(from_elsewhere)
    try:
        yield
    finally:
        root.removeFilter(from_elsewhere)


def probe_agreement(reference: OnnxTowerFiles, candidate: OnnxTowerFiles) -> float:
    """The lowest cosine between two graphs' embeddings of the probe clips."""
    clips = probe_clips()
    expected = OnnxAudioTower(reference).embed_windows(clips)
    actual = OnnxAudioTower(candidate).embed_windows(clips)
    return float(np.sum(expected * actual, axis=1).min())
