"""CLAP's model version: what decides whether stored results are still this model's."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

INT8_RECIPE = "int8q1"  # the int8 graph's recipe (precision.py): a new one re-analyzes
# how a track becomes an embedding: laion-clap's int16 round trip of the waveform, 10-second
# windows (windows.py); change it when a change there would change stored embeddings (e.g.
# "i16-w10s-r2"): every CLAP result is then redone
WINDOW_RECIPE = "i16-w10s"
# Embeddings within this cosine of the torch tower's stand for them: the same model version.
SAME_VERSION_MIN_COSINE = 0.9999
# Below it on a probe clip, int8 is not the model the user chose (precision.py): fp32 runs.
INT8_MIN_COSINE = 0.99


def model_version(model: str, max_windows: int, precision: str = "fp32") -> str:
    """Changes with the weights' content, the window recipe and an int8 precision, and with
    nothing else: a model folder copied, moved or touched keeps its results, and so does the
    ONNX float32 tower (within SAME_VERSION_MIN_COSINE of torch's, checked at export). `i16`:
    the waveform goes through laion-clap's int16 round trip, as the original computes.

    int8 is a version of its own: it is accepted down to cosine 0.99 of float32, well beyond
    the bound within which results stand for float32's. It follows the setting, known before
    the model loads; when int8 is refused at load, the float32 results carry int8's version
    (the status detail says why)."""
    suffix = f"-{INT8_RECIPE}" if precision == "int8" else ""
    return f"{weights_digest(model)[:12]}-{WINDOW_RECIPE}-max{max_windows}{suffix}"


@functools.cache
def weights_digest(model: str) -> str:
    """sha256 over the weight files' names (relative to the model folder) and contents; a hub
    id is its own name: the hub keeps what an id names. Once per process."""
    location = Path(model).expanduser()
    files = _weight_files(location)
    if not files:
        return hashlib.sha256(model.encode()).hexdigest()
    digest = hashlib.sha256()
    for path in files:
        if location.is_dir():  # which file holds what matters in a folder
            digest.update(f"{path.relative_to(location).as_posix()}\0".encode())
        with path.open("rb") as weights:
            digest.update(hashlib.file_digest(weights, "sha256").digest())
    return digest.hexdigest()


def _weight_files(location: Path) -> list[Path]:
    if location.is_dir():
        return sorted(path for path in location.rglob("*") if path.is_file())
    return [location] if location.is_file() else []
