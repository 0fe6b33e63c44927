"""Read the original laion-clap `.pt` checkpoints and rename their weights to transformers' layout.

Users often already have files such as `music_audioset_epoch_15_esc_90.14.pt` (HTSAT-base audio
tower, RoBERTa text tower). Rather than depend on the `laion-clap` package (it pins numpy<2 and
fetches tokenizers at import), the weights are renamed into transformers' `ClapModel` layout, the
same renaming transformers' own `convert_clap_original_pytorch_to_hf.py` performs, and the model
config is read off the tensor shapes. Every key is accounted for: renamed, or dropped on purpose
(listed below), or the conversion fails and names it.
"""

from __future__ import annotations

import logging
import math
import pickle
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import ClapConfig, ClapFeatureExtractor

log = logging.getLogger(__name__)

UNTRAINED_MARKER = "soundspan_untrained"
"""A config attribute (or a top-level checkpoint key) that marks weights as random test weights."""

# The original training pipeline's fixed front end (laion-clap's audio_cfg for HTSAT models).
LAION_SAMPLE_RATE = 48_000
LAION_HOP_LENGTH = 480
LAION_FFT_SIZE = 1024
LAION_MIN_FREQUENCY = 50
LAION_MAX_FREQUENCY = 14_000
LAION_CLIP_SECONDS = 10
HTSAT_SPEC_SIZE = 256  # every HTSAT size (tiny, base, large) reshapes the mel to 256 x 256
ROBERTA_LAYER_NORM_EPS = 1e-5  # RoBERTa's own value; transformers' ClapTextConfig default is 1e-12

# Weights the original model holds that an embedding never uses, or constants transformers rebuilds.
_DROPPED_PREFIXES = (
    "audio_branch.spectrogram_extractor.",  # STFT as conv weights: the feature extractor does this
    "audio_branch.logmel_extractor.",  # mel filter bank: likewise
    "audio_branch.head.",  # AudioSet classifier head
    "audio_branch.tscam_conv.",  # AudioSet token-semantic head
    "text_transform.",  # training-only MLP on top of the text embedding
    "audio_transform.",  # training-only MLP on top of the audio embedding
)
_DROPPED_SUFFIXES = (
    ".attn_mask",  # shifted-window mask, recomputed by transformers on the fly
    "embeddings.position_ids",  # constant buffers: rebuilt below, as transformers builds them
    "embeddings.token_type_ids",
)

_BLOCK = r"audio_branch\.layers\.(\d+)\.blocks\.(\d+)\."
_HF_BLOCK = r"audio_model.audio_encoder.layers.\1.blocks.\2."
_RENAMES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"^logit_scale_([at])$", r"logit_scale_\1"),
        (r"^text_branch\.(.+)$", r"text_model.\1"),
        # nn.Sequential(Linear, ReLU, Linear): indices 0 and 2
        (r"^(text|audio)_projection\.0\.(weight|bias)$", r"\1_projection.linear1.\2"),
        (r"^(text|audio)_projection\.2\.(weight|bias)$", r"\1_projection.linear2.\2"),
        (r"^audio_branch\.bn0\.(.+)$", r"audio_model.audio_encoder.batch_norm.\1"),
        (_BLOCK + r"norm1\.(weight|bias)$", _HF_BLOCK + r"layernorm_before.\3"),
        (_BLOCK + r"norm2\.(weight|bias)$", _HF_BLOCK + r"layernorm_after.\3"),
        (_BLOCK + r"attn\.proj\.(weight|bias)$", _HF_BLOCK + r"attention.output.dense.\3"),
        (
            _BLOCK + r"attn\.(relative_position_bias_table|relative_position_index)$",
            _HF_BLOCK + r"attention.self.\3",
        ),
        (_BLOCK + r"mlp\.fc1\.(weight|bias)$", _HF_BLOCK + r"intermediate.dense.\3"),
        (_BLOCK + r"mlp\.fc2\.(weight|bias)$", _HF_BLOCK + r"output.dense.\3"),
        (
            r"^audio_branch\.(patch_embed\..+|norm\.(?:weight|bias)|layers\.\d+\.downsample\..+)$",
            r"audio_model.audio_encoder.\1",
        ),
    )
)
_FUSED_QKV = re.compile(_BLOCK + r"attn\.qkv\.(weight|bias)$")


class CheckpointMismatch(ValueError):
    """The file is not a laion-clap checkpoint this module knows how to convert."""


class UnsafeCheckpoint(ValueError):
    """The file holds Python objects besides tensors: only full unpickling, which runs code
    from the file, could read it."""


def read_laion_checkpoint(
    path: Path, allow_unsafe: bool = False
) -> tuple[dict[str, torch.Tensor], bool]:
    """The state dict of a laion-clap `.pt` (unwrapped, `module.` stripped) and its untrained mark.

    Memory-maps the file, so the optimizer state such files also carry is never read into RAM.
    Raises UnsafeCheckpoint where reading it needs full unpickling and `allow_unsafe` is off.
    """
    raw = _torch_load(path, allow_unsafe)
    marked = bool(isinstance(raw, Mapping) and raw.get(UNTRAINED_MARKER, False))
    state = raw.get("state_dict", raw) if isinstance(raw, Mapping) else None
    if not isinstance(state, Mapping) or not state:
        raise CheckpointMismatch(f"{path} holds no state dict")
    tensors = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointMismatch(f"{path}: entry {key!r} of its state dict is not a tensor")
        tensors[key.removeprefix("module.")] = value
    return tensors, marked


def _torch_load(path: Path, allow_unsafe: bool) -> Any:
    try:
        return _load_weights_only(path)
    except pickle.UnpicklingError as error:
        # Checkpoints saved with extra Python objects beside the tensors: unpickling them in
        # full runs whatever code the file names, so only when the user says they trust it.
        if not allow_unsafe:
            raise UnsafeCheckpoint(str(error).splitlines()[0]) from error
        log.warning("%s needs full unpickling (weights_only=False); loading it as trusted", path)
        return torch.load(path, map_location="cpu", weights_only=False, mmap=_is_zip(path))


def _load_weights_only(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as error:
        if _is_zip(path):
            raise
        log.debug("%s is in torch's legacy format, cannot memory-map it: %s", path, error)
        return torch.load(path, map_location="cpu", weights_only=True)


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == b"PK\x03\x04"


def convert_laion_state_dict(original: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an original laion-clap state dict to exactly the keys of transformers' `ClapModel`.

    Raises CheckpointMismatch naming the keys no rule covers, so nothing is silently lost.
    The tensors stay views of the original ones (no copy), so a memory-mapped file stays mapped.
    """
    converted: dict[str, torch.Tensor] = {}
    unknown = []
    for key, tensor in original.items():
        key = key.removeprefix("module.")
        if key.startswith(_DROPPED_PREFIXES) or key.endswith(_DROPPED_SUFFIXES):
            continue
        if fused := _FUSED_QKV.match(key):
            # One Linear(dim, 3*dim) in the original; three Linear(dim, dim) in transformers.
            layer, block, kind = fused.groups()
            prefix = f"audio_model.audio_encoder.layers.{layer}.blocks.{block}.attention.self"
            for name, part in zip(("query", "key", "value"), tensor.chunk(3, dim=0), strict=True):
                converted[f"{prefix}.{name}.{kind}"] = part
            continue
        for pattern, replacement in _RENAMES:
            if pattern.match(key):
                converted[pattern.sub(replacement, key)] = tensor
                break
        else:
            unknown.append(key)
    if unknown:
        shown = ", ".join(sorted(unknown)[:5])
        raise CheckpointMismatch(f"{len(unknown)} weights no conversion rule covers: {shown}")
    positions = converted.get("text_model.embeddings.position_embeddings.weight")
    if positions is not None:
        # Not every original file carries these constants; transformers' model holds both.
        position_ids = torch.arange(positions.shape[0]).unsqueeze(0)
        converted["text_model.embeddings.position_ids"] = position_ids
        converted["text_model.embeddings.token_type_ids"] = torch.zeros_like(position_ids)
    return converted


def clap_config_from_state_dict(state: Mapping[str, torch.Tensor]) -> ClapConfig:
    """A ClapConfig matching converted weights, read off their shapes.

    Two values are not in the shapes: the text tower's head count (RoBERTa's 64-wide heads are
    assumed) and the spectrogram size (HTSAT's fixed 256).
    """
    shape = _shape_reader(state)
    text_hidden = shape("text_model.embeddings.word_embeddings.weight")[1]
    text_config = {
        "vocab_size": shape("text_model.embeddings.word_embeddings.weight")[0],
        "hidden_size": text_hidden,
        "num_hidden_layers": _count_indices(state, r"text_model\.encoder\.layer\.(\d+)\."),
        "num_attention_heads": max(1, text_hidden // 64),
        "intermediate_size": shape("text_model.encoder.layer.0.intermediate.dense.weight")[0],
        "max_position_embeddings": shape("text_model.embeddings.position_embeddings.weight")[0],
        "type_vocab_size": shape("text_model.embeddings.token_type_embeddings.weight")[0],
        "layer_norm_eps": ROBERTA_LAYER_NORM_EPS,
    }
    encoder = "audio_model.audio_encoder."
    patch_width, _, patch_size, _ = shape(encoder + "patch_embed.proj.weight")
    stage_count = _count_indices(state, re.escape(encoder) + r"layers\.(\d+)\.")
    depths = [
        _count_indices(state, re.escape(f"{encoder}layers.{stage}.") + r"blocks\.(\d+)\.")
        for stage in range(stage_count)
    ]
    bias_table = encoder + "layers.{}.blocks.0.attention.self.relative_position_bias_table"
    heads = [shape(bias_table.format(stage))[1] for stage in range(stage_count)]
    window_size = (math.isqrt(shape(bias_table.format(0))[0]) + 1) // 2
    fusion = encoder + "patch_embed.mel_conv2d.weight" in state
    audio_config: dict[str, Any] = {
        "num_mel_bins": shape(encoder + "batch_norm.weight")[0],
        "spec_size": HTSAT_SPEC_SIZE,
        "patch_size": patch_size,
        "patch_stride": [patch_size, patch_size],
        "patch_embeds_hidden_size": patch_width,
        "depths": depths,
        "num_attention_heads": heads,
        "window_size": window_size,
        "hidden_size": shape("audio_projection.linear1.weight")[1],
        "mlp_ratio": shape(encoder + "layers.0.blocks.0.intermediate.dense.weight")[0]
        / patch_width,
        "qkv_bias": encoder + "layers.0.blocks.0.attention.self.query.bias" in state,
        "enable_patch_layer_norm": encoder + "patch_embed.norm.weight" in state,
        "enable_fusion": fusion,
        "fusion_type": "aff_2d" if fusion else None,
    }
    if fusion:
        inner = shape(encoder + "patch_embed.fusion_model.local_att.0.weight")[0]
        audio_config["aff_block_r"] = patch_width // inner
    return ClapConfig(
        text_config=text_config,
        audio_config=audio_config,
        projection_dim=shape("audio_projection.linear1.weight")[0],
    )


def laion_feature_extractor(num_mel_bins: int = 64, fusion: bool = False) -> ClapFeatureExtractor:
    """The feature extractor that reproduces the original front end of a laion-clap model.

    Unfused models computed a librosa (Slaney) mel inside the model: transformers' `rand_trunc`
    path uses those filters. Fused models were fed torchaudio (HTK) mels: the `fusion` path.
    """
    return ClapFeatureExtractor(
        feature_size=num_mel_bins,
        sampling_rate=LAION_SAMPLE_RATE,
        hop_length=LAION_HOP_LENGTH,
        max_length_s=LAION_CLIP_SECONDS,
        fft_window_size=LAION_FFT_SIZE,
        frequency_min=LAION_MIN_FREQUENCY,
        frequency_max=LAION_MAX_FREQUENCY,
        truncation=truncation_for(fusion),
        padding="repeatpad",
    )


def truncation_for(fusion: bool) -> str:
    """The feature extractor mode whose mel filters and channel count match the audio tower."""
    return "fusion" if fusion else "rand_trunc"


def _shape_reader(state: Mapping[str, torch.Tensor]) -> Callable[[str], tuple[int, ...]]:
    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise CheckpointMismatch(f"the checkpoint has no {key} (after renaming)")
        return tuple(state[key].shape)

    return shape


def _count_indices(state: Mapping[str, torch.Tensor], pattern: str) -> int:
    found = {int(match.group(1)) for key in state if (match := re.match(pattern, key))}
    if found != set(range(len(found))):
        raise CheckpointMismatch(f"layer numbers are not contiguous for {pattern}: {sorted(found)}")
    return len(found)
