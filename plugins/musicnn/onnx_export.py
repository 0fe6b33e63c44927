"""Convert a musicnn checkpoint to ONNX once and reuse the result, keyed by the weights' hash.

Each cache entry is ``<model>-<hash>.onnx`` plus a JSON record beside it that names the
checkpoint it came from. Both are written to a temporary file and renamed into place, the JSON
last, so an entry without its JSON (a crash mid-write) is never trusted, only rebuilt.
"""

from __future__ import annotations

import json
from pathlib import Path

from soundspan_plugins.shared.files import (
    file_facts,
    move_into_place,
    read_cache_record,
    temporary_path,
    write_atomically,
)

from .network import (
    DEFAULT_MODEL,
    ModelCard,
    checkpoint_files,
    checkpoint_index,
    checkpoint_sha256,
    convert,
    missing_extra,
)

# Bump when network.py changes the graph it writes, so stale cache entries are rebuilt.
CONVERTER_VERSION = 1


def ensure_onnx(
    model_name: str = DEFAULT_MODEL, cache_dir: Path | str = ".", index_path: Path | None = None
) -> tuple[Path, ModelCard]:
    """Return the cached ONNX file and card for ``model_name``, converting only if needed.

    ``index_path`` picks a checkpoint other than the musicnn wheel's (tests, custom weights).
    ModelNotAvailable, naming the install command, without the musicnn extra to run it.
    """
    if (missing := missing_extra()) is not None:
        raise missing
    cache_dir = Path(cache_dir)
    index_path = checkpoint_index(model_name) if index_path is None else Path(index_path)
    digest = checkpoint_sha256(index_path)
    stem = f"{model_name}-{digest[:16]}-v{CONVERTER_VERSION}"
    onnx_path, record_path = cache_dir / f"{stem}.onnx", cache_dir / f"{stem}.json"

    card = read_cache_record(
        record_path,
        {"checkpoint_sha256": digest, "converter_version": CONVERTER_VERSION},
        {"onnx_bytes": onnx_path},
        lambda record: ModelCard(
            model_id=record["model_id"],
            tags=tuple(record["tags"]),
            embedding_dim=record["embedding_dim"],
            checkpoint_sha256=record["checkpoint_sha256"],
        ),
    )
    if card is not None:
        return onnx_path, card

    cache_dir.mkdir(parents=True, exist_ok=True)
    temporary_onnx = temporary_path(cache_dir, ".onnx")
    try:
        card = convert(model_name, temporary_onnx, index_path)
        move_into_place(temporary_onnx, onnx_path)
    finally:
        temporary_onnx.unlink(missing_ok=True)
    record = {
        "model_id": card.model_id,
        "tags": list(card.tags),
        "embedding_dim": card.embedding_dim,
        "checkpoint_sha256": card.checkpoint_sha256,
        "checkpoint_files": [str(path) for path in checkpoint_files(index_path)],
        "converter_version": CONVERTER_VERSION,
        **file_facts({"onnx_bytes": onnx_path}),
    }
    write_atomically(record_path, json.dumps(record, indent=1) + "\n")
    return onnx_path, card
