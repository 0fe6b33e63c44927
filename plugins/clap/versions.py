"""CLAP's model version: what decides whether stored results are still this model's."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path


def model_version(model: str, max_windows: int) -> str:
    """Changes with the weights' content and the window recipe, and with nothing else: a model
    folder copied, moved or touched keeps its results. `i16`: the waveform goes through
    laion-clap's int16 round trip, as the original computes."""
    return f"{weights_digest(model)[:12]}-i16-w10s-max{max_windows}"


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
