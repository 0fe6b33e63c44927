"""Tiny CLAP models the tests build and save in the real on-disk formats (nothing downloaded).

The weights are random and the saved config carries the untrained marker, so no loader may
report them as a trained model.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import ClapConfig, ClapModel, RobertaTokenizer

from soundspan_plugins.clap.laion_checkpoint import UNTRAINED_MARKER, laion_feature_extractor

PROJECTION_DIM = 32
TEXTS = ["warm analog synth pads", "distorted guitar riff", "solo classical piano"]
CONSTANT_BUFFERS = ("position_ids", "token_type_ids", "relative_position_index")


def tiny_config(projection_dim: int = PROJECTION_DIM) -> ClapConfig:
    """A CLAP small enough for milliseconds per clip, with the real 48 kHz / 64-mel front end.

    spec_size stays 256 and num_mel_bins 64: the encoder folds the 1001 x 64 mel of a 10-s clip
    into a 256 x 256 image, so both are tied to the feature extractor. hidden_size must equal
    patch_embeds_hidden_size * 2**(stages - 1); two blocks per stage include a shifted window.
    """
    return ClapConfig(
        text_config={
            "vocab_size": 300,
            "hidden_size": 64,  # one 64-wide head, RoBERTa's head width
            "num_hidden_layers": 2,
            "num_attention_heads": 1,
            "intermediate_size": 128,
            "max_position_embeddings": 80,
            "layer_norm_eps": 1e-5,
        },
        audio_config={
            "patch_embeds_hidden_size": 8,
            "depths": [2, 2],
            "num_attention_heads": [1, 2],
            "hidden_size": 16,
            "window_size": 8,
        },
        projection_dim=projection_dim,
    )


def htsat_base_roberta_config() -> ClapConfig:
    """HTSAT-base (laion-clap's htsat.py) with roberta-base, as transformers' ClapConfig: the
    sizes of the released music checkpoint and of laion/larger_clap_music."""
    return ClapConfig(
        text_config={
            "vocab_size": 50265,
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
            "max_position_embeddings": 514,
            "type_vocab_size": 1,
            "layer_norm_eps": 1e-5,
        },
        audio_config={
            "num_mel_bins": 64,
            "spec_size": 256,
            "patch_size": 4,
            "patch_stride": [4, 4],
            "patch_embeds_hidden_size": 128,
            "depths": [2, 2, 12, 2],
            "num_attention_heads": [4, 8, 16, 32],
            "window_size": 8,
            "hidden_size": 1024,
        },
        projection_dim=512,
    )


def random_weights(model: ClapModel, seed: int) -> None:
    """Move every weight off its initial value, so a swapped key cannot go unnoticed."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and not name.endswith(CONSTANT_BUFFERS):
                noise = torch.randn(tensor.shape, generator=generator) * 0.05
                tensor.copy_((tensor + noise).abs() if "running_var" in name else tensor + noise)


def save_tokenizer(
    directory: Path, phrases: list[str] | None = None, vocab_size: int = 300
) -> None:
    """A RoBERTa-style byte-level BPE tokenizer trained on a few phrases (ids 0..4 as RoBERTa)."""
    corpus = phrases or TEXTS + ["fast drum and bass", "calm ambient drone with rain", "a cat"]
    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(
        corpus * 3,
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        show_progress=False,
    )
    bpe = json.loads(trainer.to_str())["model"]
    merges = [
        tuple(pair) if isinstance(pair, list) else tuple(pair.split()) for pair in bpe["merges"]
    ]
    RobertaTokenizer(vocab=bpe["vocab"], merges=merges).save_pretrained(directory)


def save_tiny_clap(directory: Path, projection_dim: int = PROJECTION_DIM, seed: int = 1) -> Path:
    """A random tiny CLAP as a Hugging Face model directory: weights, tokenizer, preprocessor."""
    torch.manual_seed(seed)
    config = tiny_config(projection_dim)
    setattr(config, UNTRAINED_MARKER, True)
    model = ClapModel(config).eval()
    random_weights(model, seed=seed)
    model.save_pretrained(directory)
    save_tokenizer(directory)
    laion_feature_extractor(num_mel_bins=64, fusion=False).save_pretrained(directory)
    return directory


def to_laion_layout(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse renaming, so the tests can write `.pt` files; checked against the released keys.

    It writes only what transformers' model holds; `save_laion_checkpoint` adds the rest.
    """
    block = re.compile(r"^audio_model\.audio_encoder\.(layers\.\d+\.blocks\.\d+)\.(.+)$")
    block_names = {
        "layernorm_before": "norm1",
        "layernorm_after": "norm2",
        "attention.output.dense": "attn.proj",
        "attention.self.relative_position_bias_table": "attn.relative_position_bias_table",
        "attention.self.relative_position_index": "attn.relative_position_index",
        "intermediate.dense": "mlp.fc1",
        "output.dense": "mlp.fc2",
    }
    original: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in hf_state.items():
        if key == "text_model.embeddings.token_type_ids":
            continue  # a non-persistent buffer in the RoBERTa the released files were saved from
        if key.startswith("text_model."):
            original["text_branch." + key.removeprefix("text_model.")] = tensor
        elif match := re.match(r"^(text|audio)_projection\.linear([12])\.(.+)$", key):
            tower, which, kind = match.groups()
            original[f"{tower}_projection.{0 if which == '1' else 2}.{kind}"] = tensor
        elif key.startswith("logit_scale_"):
            original[key] = tensor
        elif key.startswith("audio_model.audio_encoder.batch_norm."):
            original["audio_branch.bn0." + key.rsplit("batch_norm.", 1)[1]] = tensor
        elif match := block.match(key):
            where, rest = match.groups()
            if qkv_part := re.match(r"^attention\.self\.(query|key|value)\.(weight|bias)$", rest):
                part, kind = qkv_part.groups()
                qkv.setdefault(f"audio_branch.{where}.attn.qkv.{kind}", {})[part] = tensor
                continue
            name, _, kind = rest.rpartition(".")
            if rest in block_names:  # tensors that are themselves the module attribute
                original[f"audio_branch.{where}.{block_names[rest]}"] = tensor
            else:
                original[f"audio_branch.{where}.{block_names[name]}.{kind}"] = tensor
        elif key.startswith("audio_model.audio_encoder."):
            original["audio_branch." + key.removeprefix("audio_model.audio_encoder.")] = tensor
        else:
            raise AssertionError(f"the test's inverse renaming misses {key}")
    for key, parts in qkv.items():
        original[key] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return original


def save_laion_checkpoint(path: Path, hf_state: dict[str, torch.Tensor], marked: bool) -> None:
    """A `.pt` laid out as laion-clap's training saved them, with the weights the loader drops."""
    original = to_laion_layout(hf_state) | {
        "audio_branch.spectrogram_extractor.stft.conv_real.weight": torch.zeros(513, 1, 8),
        "audio_branch.spectrogram_extractor.stft.conv_imag.weight": torch.zeros(513, 1, 8),
        "audio_branch.logmel_extractor.melW": torch.zeros(513, 64),
        "audio_branch.tscam_conv.weight": torch.zeros(527, 16, 2, 3),
        "audio_branch.tscam_conv.bias": torch.zeros(527),
        "audio_branch.head.weight": torch.zeros(527, 527),
        "audio_branch.head.bias": torch.zeros(527),
        "audio_branch.layers.0.blocks.1.attn_mask": torch.zeros(64, 64, 64),
        "text_transform.sequential.0.weight": torch.zeros(PROJECTION_DIM, PROJECTION_DIM),
        "text_transform.sequential.3.weight": torch.zeros(PROJECTION_DIM, PROJECTION_DIM),
        "audio_transform.sequential.0.bias": torch.zeros(PROJECTION_DIM),
    }
    checkpoint = {
        "epoch": 15,
        "name": "tiny-test",
        "state_dict": {"module." + key: tensor.clone() for key, tensor in original.items()},
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]},
    }
    if marked:
        checkpoint[UNTRAINED_MARKER] = True
    torch.save(checkpoint, path)


def save_hub_files(directory: Path, seed: int = 1) -> dict[str, Path]:
    """What the tests' hub serves as the default model: a tiny 512-dimensional laion-layout
    `.pt` (marked untrained) and a RoBERTa tokenizer as roberta-base's repository holds one."""
    torch.manual_seed(seed)
    config = tiny_config(projection_dim=512)
    model = ClapModel(config).eval()
    random_weights(model, seed=seed)
    save_laion_checkpoint(directory / "checkpoint.pt", model.state_dict(), marked=True)
    save_tokenizer(directory / "tokenizer")
    (directory / "tokenizer" / "config.json").write_text('{"model_type": "roberta"}')
    return {
        "music_audioset_epoch_15_esc_90.14.pt": directory / "checkpoint.pt",
        **{name: directory / "tokenizer" / name for name in ("config.json", "tokenizer.json")},
    }
