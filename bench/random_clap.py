"""Random CLAP models the benchmarks build and save in the real on-disk formats (nothing
downloaded): one of the real sizes of `laion/larger_clap_music`, and a tiny one.

The weights are random and the saved config carries the untrained marker, so no loader may
report them as a trained model. The tests build the same models (tests/harness/clap_models.py);
the benchmarks keep their own copy so that bench/ never imports tests/.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import ClapConfig, ClapModel, RobertaTokenizer

from soundspan_plugins.clap.laion_checkpoint import UNTRAINED_MARKER, laion_feature_extractor

TEXTS = ["warm analog synth pads", "distorted guitar riff", "solo classical piano"]
CONSTANT_BUFFERS = ("position_ids", "token_type_ids", "relative_position_index")


def tiny_config(projection_dim: int) -> ClapConfig:
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
    """Move every weight off its initial value, as a trained model's are."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and not name.endswith(CONSTANT_BUFFERS):
                noise = torch.randn(tensor.shape, generator=generator) * 0.05
                tensor.copy_((tensor + noise).abs() if "running_var" in name else tensor + noise)


def save_tokenizer(directory: Path, vocab_size: int = 300) -> None:
    """A RoBERTa-style byte-level BPE tokenizer trained on a few phrases (ids 0..4 as RoBERTa)."""
    corpus = TEXTS + ["fast drum and bass", "calm ambient drone with rain", "a cat"]
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


def save_tiny_clap(directory: Path, projection_dim: int, seed: int = 1) -> Path:
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
