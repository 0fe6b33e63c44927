"""Load a CLAP model for inference without reaching the network unless the user allows it.

Three sources, picked from one setting (`[clap] model`):
  * a local Hugging Face-format directory (config.json + weights, ideally tokenizer and
    preprocessor_config.json beside them)                                    -> "hf-dir"
  * a hub id such as `laion/larger_clap_music`, read from the local HF cache    -> "hub-cache"
    (downloaded first only when `[clap] allow_download` is on)
  * an original laion-clap `.pt` checkpoint, renamed on the fly              -> "laion-pt"
    (its tokenizer comes from `[clap] tokenizer`, or a RoBERTa tokenizer in the HF cache)

A worker can load only the tower it needs: the audio tower of larger_clap_music is about a third
of the model, the text tower (RoBERTa) the other two thirds.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import transformers
from transformers import (
    ClapAudioModelWithProjection,
    ClapConfig,
    ClapFeatureExtractor,
    ClapModel,
    ClapTextModelWithProjection,
    PreTrainedTokenizerBase,
)

from .errors import ClapUnavailable, setting
from .laion_checkpoint import (
    UNTRAINED_MARKER,
    CheckpointMismatch,
    UnsafeCheckpoint,
    clap_config_from_state_dict,
    convert_laion_state_dict,
    laion_feature_extractor,
    read_laion_checkpoint,
)
from .model_source import ModelSource, locate_model, not_in_hub_cache
from .preprocessing import HF_MUSIC_MODEL, find_tokenizer, hf_feature_extractor, quiet_transformers

Tower = Literal["audio", "text"]
BOTH_TOWERS: tuple[Tower, ...] = ("audio", "text")
# Buffers transformers rebuilds from the config; their absence from a file loses nothing.
_REBUILT_BUFFERS = (
    "embeddings.position_ids",
    "embeddings.token_type_ids",
    "relative_position_index",
)


@dataclass(frozen=True)
class ClapModelInfo:
    """What was loaded, honestly: `trained` is False for random or test weights."""

    model_id: str  # the hub id, or the resolved path of the directory or .pt file
    source: ModelSource
    trained: bool
    untrained_reason: str | None  # why `trained` is False
    embedding_dim: int  # projection_dim: 512 for the LAION models
    device: str
    dtype: str  # "float32", or "float16" on CUDA
    fusion: bool  # feature-fusion audio tower (clap-htsat-fused); larger_clap_* are unfused
    towers: tuple[Tower, ...]


@dataclass(frozen=True)
class LoadedClap:
    """A model ready for inference and the preprocessing that matches it.

    `model` has `audio_model`/`audio_projection` when the audio tower is loaded and
    `text_model`/`text_projection` when the text tower is; the other preprocessor is None.
    """

    model: torch.nn.Module
    feature_extractor: ClapFeatureExtractor | None
    tokenizer: PreTrainedTokenizerBase | None
    info: ClapModelInfo


def load_clap(
    model: str | os.PathLike[str] = HF_MUSIC_MODEL,
    *,
    tokenizer: str | os.PathLike[str] | None = None,
    towers: Iterable[Tower] = BOTH_TOWERS,
    device: str = "cpu",
    threads: int | None = None,
    allow_download: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    allow_unsafe_checkpoint: bool = False,
) -> LoadedClap:
    """Load a CLAP model (HF dir, cached hub id, or laion `.pt`) in eval mode on `device`.

    Raises ClapUnavailable, naming the setting to change, when nothing usable is found, or
    when a `.pt` could be read only by running code from it and that is not allowed.
    """
    wanted = _validated_towers(towers)
    _check_device(device)
    if threads:
        torch.set_num_threads(threads)
    source, location = locate_model(model, allow_download, cache_dir)
    if source == "laion-pt":
        loaded = _load_laion_checkpoint(
            Path(location), wanted, tokenizer, allow_download, cache_dir, allow_unsafe_checkpoint
        )
    else:
        # for a local directory, downloads only govern a tokenizer from the hub
        loaded = _load_hf(str(location), source, wanted, tokenizer, not allow_download, cache_dir)
    return _placed(loaded, device)


def _validated_towers(towers: Iterable[Tower]) -> tuple[Tower, ...]:
    requested = set(towers)
    wanted = tuple(tower for tower in BOTH_TOWERS if tower in requested)
    unknown = requested - set(BOTH_TOWERS)
    if unknown or not wanted:
        raise ValueError(f"towers must be a non-empty subset of {BOTH_TOWERS}, not {towers!r}")
    return wanted


def _check_device(device: str) -> None:
    if device == "cpu":
        return
    if not device.startswith("cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', not {device!r}")
    if not torch.cuda.is_available():
        raise ClapUnavailable(
            f"CLAP is set to run on {device}, but this torch sees no CUDA GPU "
            f"(torch {torch.__version__}). Set {setting('device')} to 'cpu', or install a CUDA "
            f"build of torch and expose the GPU to this process.",
            setting("device"),
        )


def _load_hf(
    location: str,
    source: ModelSource,
    towers: tuple[Tower, ...],
    tokenizer_location: str | os.PathLike[str] | None,
    local_only: bool,
    cache_dir: str | os.PathLike[str] | None,
) -> LoadedClap:
    options: dict[str, Any] = {"local_files_only": local_only, "cache_dir": cache_dir}
    try:
        with quiet_transformers():
            config = ClapConfig.from_pretrained(location, **options)
            model, loading_info = _tower_class(towers).from_pretrained(
                location,
                config=_tower_config(config, towers),
                dtype=torch.float32,
                output_loading_info=True,
                **options,
            )
    except (OSError, ValueError) as error:  # ValueError: a config of another model type
        raise _not_found(location, source, options, error) from error
    _require_complete(model, loading_info["missing_keys"], location)
    feature_extractor = None
    if "audio" in towers:
        feature_extractor = hf_feature_extractor(location, config, options)
    text_tokenizer = None
    if "text" in towers:
        text_tokenizer = find_tokenizer(tokenizer_location, location, config, options)
    marked = bool(getattr(config, UNTRAINED_MARKER, False))
    info = _info(location, source, config, model, marked, towers)
    return LoadedClap(model.eval(), feature_extractor, text_tokenizer, info)


def _not_found(
    location: str, source: ModelSource, options: dict[str, Any], error: Exception
) -> Exception:
    if source == "hf-dir":
        return ClapUnavailable(
            f"{location} is not a usable CLAP model directory ({error}). Set {setting('model')} "
            f"to a directory that holds config.json and the model weights.",
            setting("model"),
        )
    if options["local_files_only"]:
        return not_in_hub_cache(location, options["cache_dir"])
    return ClapUnavailable(
        f"CLAP model {location} could not be fetched from the Hugging Face hub ({error}). "
        f"Check the id, or set {setting('model')} to a local model directory or .pt checkpoint.",
        setting("model"),
    )


def _load_laion_checkpoint(
    path: Path,
    towers: tuple[Tower, ...],
    tokenizer_location: str | os.PathLike[str] | None,
    allow_download: bool,
    cache_dir: str | os.PathLike[str] | None,
    allow_unsafe: bool,
) -> LoadedClap:
    try:
        original, marked = read_laion_checkpoint(path, allow_unsafe)
        converted = convert_laion_state_dict(original)
        config = clap_config_from_state_dict(converted)
    except UnsafeCheckpoint as error:
        raise ClapUnavailable(
            f"{path} holds Python objects besides its weights ({error}); reading it would run "
            f"code from the file. Save its state dict alone (torch.save(checkpoint["
            f"'state_dict'], ...)) and point {setting('model')} at that, or, only if you trust "
            f"the file, set {setting('allow_unsafe_checkpoint')} = true.",
            setting("allow_unsafe_checkpoint"),
        ) from error
    except (CheckpointMismatch, OSError, RuntimeError) as error:
        raise ClapUnavailable(
            f"{path} is not a laion-clap checkpoint this version can read: {error}. "
            f"Set {setting('model')} to a laion-clap .pt file (e.g. "
            f"music_audioset_epoch_15_esc_90.14.pt) or a Hugging Face model directory.",
            setting("model"),
        ) from error
    # Built without memory (meta device) and handed the checkpoint's own tensors (assign): no
    # random init to throw away, and the weights stay pages of the memory-mapped file, shared
    # by every worker that loads the same file.
    with quiet_transformers(), torch.device("meta"):
        model = _tower_class(towers)(_tower_config(config, towers))
    prefixes = _state_prefixes(towers)
    wanted = {key: value for key, value in converted.items() if key.startswith(prefixes)}
    missing, unexpected = model.load_state_dict(wanted, strict=False, assign=True)
    if unexpected:
        raise ClapUnavailable(
            f"{path}: weights {sorted(unexpected)[:5]} do not fit the model read off its shapes. "
            f"Set {setting('model')} to a laion-clap HTSAT + RoBERTa checkpoint.",
            setting("model"),
        )
    _require_complete(model, missing, str(path), rebuilt=())
    if any(tensor.is_meta for tensor in model.state_dict().values()):
        raise ClapUnavailable(  # a buffer outside the state dict: a transformers change
            f"{path}: transformers {transformers.__version__} builds a CLAP model this loader "
            f"cannot fill from a laion checkpoint. Set {setting('model')} to a Hugging Face "
            f"model directory instead.",
            setting("model"),
        )
    feature_extractor = None
    if "audio" in towers:
        num_mel_bins = config.audio_config.num_mel_bins
        feature_extractor = laion_feature_extractor(num_mel_bins, config.audio_config.enable_fusion)
    text_tokenizer = None
    if "text" in towers:
        options = {"local_files_only": not allow_download, "cache_dir": cache_dir}
        text_tokenizer = find_tokenizer(tokenizer_location, None, config, options)
    info = _info(str(path), "laion-pt", config, model, marked, towers)
    return LoadedClap(model.eval(), feature_extractor, text_tokenizer, info)


def _tower_class(towers: tuple[Tower, ...]) -> type[torch.nn.Module]:
    if towers == BOTH_TOWERS:
        return ClapModel
    return ClapAudioModelWithProjection if towers == ("audio",) else ClapTextModelWithProjection


def _tower_config(config: ClapConfig, towers: tuple[Tower, ...]) -> Any:
    if towers == BOTH_TOWERS:
        return config
    return config.audio_config if towers == ("audio",) else config.text_config


def _state_prefixes(towers: tuple[Tower, ...]) -> tuple[str, ...]:
    if towers == BOTH_TOWERS:
        return ("",)
    return tuple(f"{towers[0]}_{part}." for part in ("model", "projection"))


def _require_complete(
    model: torch.nn.Module,
    missing: Iterable[str],
    where: str,
    rebuilt: tuple[str, ...] = _REBUILT_BUFFERS,
) -> None:
    """Refuse a model with weights left at random init: it would embed noise, quietly."""
    lost = sorted(key for key in missing if not key.endswith(rebuilt))
    if lost:
        raise ClapUnavailable(
            f"{where} lacks {len(lost)} weights the model needs ({', '.join(lost[:5])}...). "
            f"Set {setting('model')} to a complete CLAP model.",
            setting("model"),
        )


def _info(
    model_id: str,
    source: ModelSource,
    config: ClapConfig,
    model: torch.nn.Module,
    marked: bool,
    towers: tuple[Tower, ...],
) -> ClapModelInfo:
    reason = untrained_reason(model, marked)
    return ClapModelInfo(
        model_id=model_id,
        source=source,
        trained=reason is None,
        untrained_reason=reason,
        embedding_dim=config.projection_dim,
        device="cpu",
        dtype="float32",
        fusion=bool(config.audio_config.enable_fusion),
        towers=towers,
    )


def untrained_reason(model: torch.nn.Module, marked: bool) -> str | None:
    """Why these weights are not a trained model, or None when nothing says so.

    Two independent signs: an explicit marker (tests write one), and the weights themselves. A
    freshly initialised tower has every LayerNorm at exactly weight 1 / bias 0; no trained model
    does. So a random model is reported untrained even if nobody marked it.
    """
    if marked:
        return f"the model is marked as random test weights ({UNTRAINED_MARKER})"
    for tower in ("audio_model", "text_model"):
        module = getattr(model, tower, None)
        norms = [m for m in module.modules() if isinstance(m, torch.nn.LayerNorm)] if module else []
        if norms and all(_at_initial_value(norm) for norm in norms):
            return f"the {tower.removesuffix('_model')} tower's weights are at their initial values"
    return None


def _at_initial_value(norm: torch.nn.LayerNorm) -> bool:
    weight_is_one = norm.weight is None or bool(torch.all(norm.weight == 1))
    return weight_is_one and (norm.bias is None or bool(torch.all(norm.bias == 0)))


def _placed(loaded: LoadedClap, device: str) -> LoadedClap:
    """On CUDA: float16 where it embeds as float32 does (checked at load), else float32."""
    if device == "cpu":
        return loaded
    from .embedding import placed  # embedding builds on this module

    return placed(loaded, device)
