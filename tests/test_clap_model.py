"""The CLAP model core on a tiny model this test builds and saves in the real on-disk formats.

No weights are downloaded: the model is random (and marked so), the tokenizer is a small
RoBERTa-style BPE trained here, and the laion `.pt` is written in the original key layout.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import ClapModel

from soundspan_plugins.clap.embedding import (
    MIN_TAIL_SECONDS,
    embed_text,
    embed_track,
    embed_windows,
    select_windows,
)
from soundspan_plugins.clap.laion_checkpoint import (
    UNTRAINED_MARKER,
    CheckpointMismatch,
    clap_config_from_state_dict,
    convert_laion_state_dict,
    laion_feature_extractor,
)
from soundspan_plugins.clap.loading import ClapUnavailable, load_clap
from tests.clap_models import (
    PROJECTION_DIM,
    TEXTS,
    random_weights,
    save_tiny_clap,
    save_tokenizer,
    tiny_config,
)

RATE = 48_000
WINDOW = 10 * RATE


def to_laion_layout(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse renaming, written from laion-clap's module names (htsat.py, model.py)."""
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
    # What the original module holds beyond transformers' model, all dropped by the loader.
    original |= {
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
    return original


def save_laion_checkpoint(path: Path, hf_state: dict[str, torch.Tensor], marked: bool) -> None:
    original = to_laion_layout(hf_state)
    checkpoint = {
        "epoch": 15,
        "name": "tiny-test",
        "state_dict": {"module." + key: tensor.clone() for key, tensor in original.items()},
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]},
    }
    if marked:
        checkpoint[UNTRAINED_MARKER] = True
    torch.save(checkpoint, path)


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same random model as an HF directory and as a laion .pt, both marked untrained."""
    root = tmp_path_factory.mktemp("clap-models")
    hf_dir = save_tiny_clap(root / "tiny-clap")
    state = ClapModel.from_pretrained(hf_dir).state_dict()
    save_laion_checkpoint(root / "tiny_clap.pt", state, marked=True)
    tokenizer_only = root / "roberta-tokenizer"
    save_tokenizer(tokenizer_only)
    return {"hf_dir": hf_dir, "pt": root / "tiny_clap.pt", "tokenizer": tokenizer_only}


@pytest.fixture(scope="module")
def hf_clap(saved_models: dict[str, Path]):
    return load_clap(saved_models["hf_dir"], threads=2)


@pytest.fixture(scope="module")
def laion_clap(saved_models: dict[str, Path]):
    return load_clap(saved_models["pt"], tokenizer=saved_models["tokenizer"])


def music(seconds: float, seed: int = 0) -> np.ndarray:
    """A few seconds of tones and noise, different in every window."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    pitch = 220 * 2 ** (np.floor(t / 7) / 12)
    signal = 0.3 * np.sin(2 * np.pi * pitch * t) + 0.05 * rng.standard_normal(t.size)
    return signal.astype(np.float32)


def test_key_conversion_covers_every_key_both_ways(saved_models: dict[str, Path]) -> None:
    model = ClapModel(tiny_config())
    hf_state = model.state_dict()
    converted = convert_laion_state_dict(to_laion_layout(hf_state))
    assert set(converted) == set(hf_state)
    for key in converted:
        assert torch.equal(converted[key], hf_state[key]), key
    rebuilt = ClapModel(clap_config_from_state_dict(converted))
    rebuilt.load_state_dict(converted, strict=True)  # no missing, no unexpected key


def test_unknown_checkpoint_keys_are_named_not_dropped() -> None:
    original = to_laion_layout(ClapModel(tiny_config()).state_dict())
    original["audio_branch.extra_head.weight"] = torch.zeros(2)
    with pytest.raises(CheckpointMismatch, match="audio_branch.extra_head.weight"):
        convert_laion_state_dict(original)


def test_hf_directory_and_laion_checkpoint_embed_identically(hf_clap, laion_clap) -> None:
    audio = music(25)
    np.testing.assert_allclose(
        embed_track(hf_clap, audio), embed_track(laion_clap, audio), rtol=0, atol=1e-6
    )
    np.testing.assert_allclose(
        embed_text(hf_clap, TEXTS), embed_text(laion_clap, TEXTS), rtol=0, atol=1e-6
    )
    assert hf_clap.info.source == "hf-dir"
    assert laion_clap.info.source == "laion-pt"
    assert hf_clap.info.fusion is laion_clap.info.fusion is False


def test_fused_model_converts_and_embeds_a_window_the_same_in_any_batch(tmp_path: Path) -> None:
    config = tiny_config()
    config.audio_config.enable_fusion = True
    config.audio_config.fusion_type = "aff_2d"
    setattr(config, UNTRAINED_MARKER, True)
    model = ClapModel(config).eval()
    random_weights(model, seed=3)
    model.save_pretrained(tmp_path / "fused")
    laion_feature_extractor(num_mel_bins=64, fusion=True).save_pretrained(tmp_path / "fused")
    save_laion_checkpoint(tmp_path / "fused.pt", model.state_dict(), marked=True)
    from_dir = load_clap(tmp_path / "fused", towers=["audio"])
    from_pt = load_clap(tmp_path / "fused.pt", towers=["audio"])
    assert from_dir.info.fusion and from_pt.info.fusion
    clips = [music(10, seed=4), music(10, seed=5), music(6, seed=6)]
    together = embed_windows(from_dir, clips)
    alone = np.stack([embed_windows(from_dir, [clip])[0] for clip in clips])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(embed_windows(from_pt, clips), together, atol=1e-6)


def test_embeddings_are_unit_length_with_the_configured_dimension(hf_clap) -> None:
    track = embed_track(hf_clap, music(12))
    texts = embed_text(hf_clap, TEXTS)
    assert track.dtype == texts.dtype == np.float32
    assert track.shape == (PROJECTION_DIM,) and hf_clap.info.embedding_dim == PROJECTION_DIM
    assert texts.shape == (len(TEXTS), PROJECTION_DIM)
    np.testing.assert_allclose(np.linalg.norm(track), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)


def test_a_95_second_track_is_the_average_of_its_windows(hf_clap) -> None:
    audio = music(95)
    windows = [audio[start : start + WINDOW] for start in range(0, audio.size, WINDOW)]
    assert len(windows) == 10 and windows[-1].size == 5 * RATE >= MIN_TAIL_SECONDS * RATE
    one_by_one = np.stack([embed_windows(hf_clap, [window])[0] for window in windows])
    expected = one_by_one.mean(axis=0) / np.linalg.norm(one_by_one.mean(axis=0))
    np.testing.assert_allclose(embed_track(hf_clap, audio), expected, atol=1e-5)
    chunks = iter(np.array_split(audio, 37))  # odd chunk sizes, as a decoder delivers them
    np.testing.assert_allclose(embed_track(hf_clap, chunks), expected, atol=1e-5)


def test_long_tracks_are_sampled_evenly_up_to_max_windows() -> None:
    # Window i is filled with the value i, so each kept window tells which one it is.
    labelled = np.repeat(np.arange(11, dtype=np.float32), WINDOW)
    kept = select_windows(labelled, max_windows=4)
    assert [int(window[0]) for window in kept] == [0, 4, 8]
    assert all(window.size == WINDOW for window in kept)

    def one_second_chunks(seconds: int):
        for _ in range(seconds):
            yield np.zeros(RATE, dtype=np.float32)

    two_hours = select_windows(one_second_chunks(2 * 3600), max_windows=32)
    assert 16 < len(two_hours) <= 32


def test_short_tail_is_dropped_and_short_track_is_kept() -> None:
    with_short_tail = np.zeros(WINDOW + 2 * RATE, dtype=np.float32)
    assert [window.size for window in select_windows(with_short_tail)] == [WINDOW]
    assert [window.size for window in select_windows(np.ones(RATE, np.float32))] == [RATE]
    with pytest.raises(ValueError, match="no audio"):
        select_windows(np.zeros(0, dtype=np.float32))


def test_different_texts_embed_differently_and_padding_does_not_matter(hf_clap) -> None:
    batch = embed_text(hf_clap, TEXTS)
    assert not np.allclose(batch[0], batch[1], atol=1e-3)
    alone = embed_text(hf_clap, [TEXTS[2]])
    np.testing.assert_allclose(alone[0], batch[2], atol=1e-5)
    assert embed_text(hf_clap, []).shape == (0, PROJECTION_DIM)


def test_test_models_are_never_reported_as_trained(
    hf_clap, laion_clap, tmp_path: Path, saved_models: dict[str, Path]
) -> None:
    assert hf_clap.info.trained is False and UNTRAINED_MARKER in hf_clap.info.untrained_reason
    assert laion_clap.info.trained is False and UNTRAINED_MARKER in laion_clap.info.untrained_reason

    unmarked = ClapModel(tiny_config())  # nobody marked it: its weights give it away
    unmarked.save_pretrained(tmp_path / "unmarked")
    info = load_clap(tmp_path / "unmarked", towers=["audio"]).info
    assert info.trained is False and "initial values" in info.untrained_reason

    save_laion_checkpoint(tmp_path / "fresh.pt", ClapModel(tiny_config()).state_dict(), False)
    assert load_clap(tmp_path / "fresh.pt", towers=["audio"]).info.trained is False

    trained_looking = ClapModel(tiny_config())
    random_weights(trained_looking, seed=2)
    save_laion_checkpoint(tmp_path / "moved.pt", trained_looking.state_dict(), marked=False)
    assert load_clap(tmp_path / "moved.pt", towers=["audio"]).info.trained is True


def test_one_tower_loads_alone_and_embeds_the_same(hf_clap, saved_models: dict[str, Path]) -> None:
    audio_only = load_clap(saved_models["hf_dir"], towers=["audio"])
    text_only = load_clap(saved_models["pt"], towers=["text"], tokenizer=saved_models["tokenizer"])
    assert not hasattr(audio_only.model, "text_model") and audio_only.tokenizer is None
    assert not hasattr(text_only.model, "audio_model") and text_only.feature_extractor is None
    audio = music(11)
    np.testing.assert_allclose(
        embed_track(audio_only, audio), embed_track(hf_clap, audio), atol=1e-6
    )
    np.testing.assert_allclose(embed_text(text_only, TEXTS), embed_text(hf_clap, TEXTS), atol=1e-6)
    with pytest.raises(ValueError, match="without its text tower"):
        embed_text(audio_only, TEXTS)


def test_missing_model_names_the_setting(tmp_path: Path) -> None:
    for missing in (tmp_path / "no-such-model", tmp_path / "no-such-checkpoint.pt"):
        with pytest.raises(ClapUnavailable, match=re.escape("[clap] model")) as raised:
            load_clap(missing)
        assert raised.value.setting.startswith("[clap] model")
    empty_cache = tmp_path / "hf-cache"
    with pytest.raises(ClapUnavailable, match="not in the local Hugging Face cache") as raised:
        load_clap("laion/larger_clap_music", cache_dir=empty_cache)
    assert "[clap] allow_download" in str(raised.value)


def test_missing_tokenizer_names_the_setting(tmp_path: Path, saved_models: dict[str, Path]) -> None:
    empty_cache = tmp_path / "hf-cache"
    with pytest.raises(ClapUnavailable, match=re.escape("[clap] tokenizer")):
        load_clap(saved_models["pt"], cache_dir=empty_cache)
    with pytest.raises(ClapUnavailable, match=re.escape("[clap] tokenizer")):
        load_clap(saved_models["pt"], tokenizer=tmp_path, cache_dir=empty_cache)
    # An audio worker needs no tokenizer at all.
    assert load_clap(saved_models["pt"], towers=["audio"], cache_dir=empty_cache).tokenizer is None
