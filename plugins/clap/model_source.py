"""Where `[clap] model` points, found without importing torch or transformers.

A host whose CLAP has no model must still start in a moment, and importing torch and
transformers costs seconds: the plugin asks here first, and imports them only for a model
that is there (or may be downloaded).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from .errors import ClapUnavailable, missing_extra, setting

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")

ModelSource = Literal["hf-dir", "hub-cache", "laion-pt"]
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def locate_model(
    model: str | os.PathLike[str],
    allow_download: bool,
    cache_dir: str | os.PathLike[str] | None,
) -> tuple[ModelSource, Path | str]:
    """The kind of source `model` is and where it lies; ClapUnavailable, naming the setting
    to change, when there is nothing to load (or the clap extra to load it with is missing)."""
    if (missing := missing_extra()) is not None:
        raise missing
    from huggingface_hub import try_to_load_from_cache

    location = str(model)
    path = Path(location).expanduser()
    if path.suffix in CHECKPOINT_SUFFIXES:
        if not path.is_file():
            raise ClapUnavailable(
                f"CLAP checkpoint {path} does not exist. Set {setting('model')} to an existing "
                f".pt file, a Hugging Face model directory, or a hub id in the local cache.",
                setting("model"),
            )
        return "laion-pt", path.resolve()
    if path.is_dir():
        return "hf-dir", path.resolve()
    if _HUB_ID.match(location) and not location.startswith((".", "~")):
        if not allow_download and not isinstance(
            try_to_load_from_cache(location, "config.json", cache_dir=cache_dir), str
        ):
            raise not_in_hub_cache(location, cache_dir)
        return "hub-cache", location
    raise ClapUnavailable(
        f"CLAP model directory {path} does not exist. Set {setting('model')} to a Hugging "
        f"Face model directory, a laion-clap .pt checkpoint, or a hub id in the local cache.",
        setting("model"),
    )


def not_in_hub_cache(location: str, cache_dir: str | os.PathLike[str] | None) -> ClapUnavailable:
    from huggingface_hub import constants as hub_constants

    return ClapUnavailable(
        f"CLAP model {location} is not in the local Hugging Face cache "
        f"({cache_dir or hub_constants.HF_HUB_CACHE}) and downloads are off. Set "
        f"{setting('model')} to a local model directory or a laion-clap .pt checkpoint, or set "
        f"{setting('allow_download')} = true.",
        setting("model"),
    )
