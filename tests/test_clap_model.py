"""The CLAP model core on a tiny model this test builds and saves in the real on-disk formats.

No weights are downloaded: the model is random (and marked so), the tokenizer is a small
RoBERTa-style BPE trained here, and the laion `.pt` is written in the original key layout. That
layout, and the renaming of it, are checked against the key names and shapes of the released
HTSAT-base + RoBERTa checkpoint, recorded from laion-clap's own model definition
(tests/fixtures/laion_clap, no weights).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, ClapConfig, ClapModel, RobertaTokenizer

from soundspan_plugins.clap.embedding import (
    HALF_PRECISION_MIN_COSINE,
    embed_text,
    embed_track,
    embed_windows,
    embedding_agreement,
    placed,
)
from soundspan_plugins.clap.laion_checkpoint import (
    UNTRAINED_MARKER,
    CheckpointMismatch,
    clap_config_from_state_dict,
    convert_laion_state_dict,
    laion_feature_extractor,
)
from soundspan_plugins.clap.loading import ClapUnavailable, load_clap
from soundspan_plugins.clap.preprocessing import (
    ROBERTA_SAMPLE_IDS,
    ROBERTA_SPECIAL_IDS,
    ROBERTA_VOCAB_SIZE,
    _checked_tokenizer,
)
from soundspan_plugins.clap.windows import MIN_TAIL_SECONDS, int16_round_trip, select_windows
from tests.harness.clap_models import (
    PROJECTION_DIM,
    TEXTS,
    htsat_base_roberta_config,
    random_weights,
    save_laion_checkpoint,
    save_tiny_clap,
    save_tokenizer,
    tiny_config,
    to_laion_layout,
)

RATE = 48_000
WINDOW = 10 * RATE


RELEASED_KEYS = Path(__file__).parent / "fixtures" / "laion_clap" / "htsat_base_roberta_keys.json"
# What the released checkpoint holds and transformers' ClapModel has no place for, on purpose:
# the STFT and mel front end (the feature extractor computes it), the AudioSet classifier heads,
# and the training-only MLPs. The shifted windows' masks are dropped too (listed per block).
NOT_IN_TRANSFORMERS = {
    "audio_branch.spectrogram_extractor.stft.conv_real.weight",
    "audio_branch.spectrogram_extractor.stft.conv_imag.weight",
    "audio_branch.logmel_extractor.melW",
    "audio_branch.head.weight",
    "audio_branch.head.bias",
    "audio_branch.tscam_conv.weight",
    "audio_branch.tscam_conv.bias",
} | {
    f"{mlp}_transform.sequential.{layer}.{kind}"
    for mlp in ("text", "audio")
    for layer in (0, 3)
    for kind in ("weight", "bias")
}
REBUILT = {"text_branch.embeddings.position_ids"}  # a constant, rebuilt as transformers does
SHIFTED_WINDOW_MASK = re.compile(r"^audio_branch\.layers\.\d+\.blocks\.\d+\.attn_mask$")


def released_state_dict() -> dict[str, torch.Tensor]:
    """The released checkpoint's `state_dict` as meta tensors: its real names and shapes only."""
    record = json.loads(RELEASED_KEYS.read_text())
    assert record["wrapped_in"] == "state_dict"
    return {key: torch.empty(shape, device="meta") for key, shape in record["shapes"].items()}


def meta_shapes(config: ClapConfig) -> dict[str, tuple[int, ...]]:
    """The state dict shapes of transformers' ClapModel for `config`, built without memory."""
    with torch.device("meta"):
        return {key: tuple(value.shape) for key, value in ClapModel(config).state_dict().items()}


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


def test_every_released_key_is_renamed_or_dropped_on_purpose() -> None:
    released = released_state_dict()
    assert all(key.startswith("module.") for key in released)  # saved from a DDP-wrapped model
    dropped, targets = set(), []
    for key, tensor in released.items():  # one key at a time: which keys each one becomes
        renamed = convert_laion_state_dict({key: tensor})
        if not renamed:
            dropped.add(key.removeprefix("module."))
        targets += renamed
    masks = {key for key in dropped if SHIFTED_WINDOW_MASK.match(key)}
    assert len(masks) == 8  # the odd blocks of stages 0-2; stage 3 is one window, never shifted
    assert dropped - masks == NOT_IN_TRANSFORMERS | REBUILT
    assert len(targets) == len(set(targets)), "two released weights land on one key"


def test_released_checkpoint_converts_to_transformers_htsat_base_roberta() -> None:
    converted = convert_laion_state_dict(released_state_dict())
    expected = meta_shapes(htsat_base_roberta_config())
    assert set(converted) == set(expected)
    assert {key: tuple(tensor.shape) for key, tensor in converted.items()} == expected
    # The config the plugin reads off the shapes builds that same model, and takes every weight.
    config = clap_config_from_state_dict(converted)
    assert meta_shapes(config) == expected
    assert config.audio_config.depths == [2, 2, 12, 2] and not config.audio_config.enable_fusion
    assert config.text_config.num_attention_heads == 12
    with torch.device("meta"):
        model = ClapModel(config)
    model.load_state_dict(converted, strict=True, assign=True)


def test_the_tests_laion_files_are_laid_out_as_the_released_checkpoint() -> None:
    released = {key.removeprefix("module."): t for key, t in released_state_dict().items()}
    kept = {
        key: tuple(t.shape)
        for key, t in released.items()
        if key not in NOT_IN_TRANSFORMERS and not SHIFTED_WINDOW_MASK.match(key)
    }
    with torch.device("meta"):
        hf_state = ClapModel(htsat_base_roberta_config()).state_dict()
    written = {key: tuple(t.shape) for key, t in to_laion_layout(hf_state).items()}
    assert written == kept


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


def test_the_waveform_goes_through_laion_claps_int16_round_trip(hf_clap) -> None:
    samples = np.array([1.5, 1.0, 0.5, 1e-5, -1e-5, -0.5, -1.0, -3.0, 0.123456], np.float32)
    # the original's float32_to_int16 and int16_to_float32 (laion_clap/training/data.py)
    original = (np.clip(samples, a_min=-1.0, a_max=1.0) * 32767.0).astype(np.int16)
    np.testing.assert_array_equal(
        int16_round_trip(samples), (original / 32767.0).astype(np.float32)
    )
    assert int16_round_trip(samples).dtype == np.float32
    # embedding applies it before the mel front end: audio below one int16 step is silence
    whisper = (1e-5 * np.sin(np.arange(RATE) / 7)).astype(np.float32)
    np.testing.assert_array_equal(
        embed_windows(hf_clap, [whisper]), embed_windows(hf_clap, [np.zeros(RATE, np.float32)])
    )
    loud = music(10)
    np.testing.assert_array_equal(
        embed_windows(hf_clap, [loud]), embed_windows(hf_clap, [int16_round_trip(loud)])
    )


def roberta_like(vocab: dict[str, int], directory: Path):
    """A tokenizer with this vocabulary (no merges), saved and loaded as a user's would be."""
    RobertaTokenizer(vocab=vocab, merges=[]).save_pretrained(directory)
    return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)


def test_a_tokenizer_without_robertas_special_ids_is_refused(
    tmp_path: Path, saved_models: dict[str, Path]
) -> None:
    swapped = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4, "a": 5, "b": 6}
    roberta_like(swapped, tmp_path / "swapped")
    with pytest.raises(ClapUnavailable, match="special tokens") as raised:
        load_clap(saved_models["pt"], towers=["text"], tokenizer=tmp_path / "swapped")
    assert raised.value.setting.startswith("[clap] tokenizer")


def test_a_real_text_tower_takes_only_robertas_vocabulary(tmp_path: Path) -> None:
    config = htsat_base_roberta_config()
    ids = dict(ROBERTA_SAMPLE_IDS) | ROBERTA_SPECIAL_IDS
    filler = (f"tok{index}" for index in range(ROBERTA_VOCAB_SIZE))
    roberta = ids | {
        next(filler): index for index in range(ROBERTA_VOCAB_SIZE) if index not in ids.values()
    }
    found = roberta_like(roberta, tmp_path / "roberta")
    assert _checked_tokenizer(found, config, "here") is found
    shuffled = dict(roberta) | {"Ġthe": roberta["Ġand"], "Ġand": roberta["Ġthe"]}
    with pytest.raises(ClapUnavailable, match="not roberta-base's vocabulary"):
        _checked_tokenizer(roberta_like(shuffled, tmp_path / "shuffled"), config, "here")
    small = {token: index for token, index in roberta.items() if index < 300}
    with pytest.raises(ClapUnavailable, match="not roberta-base's vocabulary"):
        _checked_tokenizer(roberta_like(small, tmp_path / "small"), config, "here")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("sampling_rate", 44_100),
        ("feature_size", 128),
        ("frequency_min", 0),
        ("frequency_max", 24_000),
        ("hop_length", 320),
        ("fft_window_size", 2048),
    ],
)
def test_a_model_directory_with_another_front_end_is_refused(
    tmp_path: Path, saved_models: dict[str, Path], name: str, value: int
) -> None:
    copy = tmp_path / "model"
    shutil.copytree(saved_models["hf_dir"], copy)
    preprocessor = copy / "preprocessor_config.json"
    settings = json.loads(preprocessor.read_text())
    settings[name] = value
    preprocessor.write_text(json.dumps(settings))
    with pytest.raises(ClapUnavailable, match=f"{name} {value}") as raised:
        load_clap(copy, towers=["audio"])
    assert raised.value.setting.startswith("[clap] model")


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_half_precision_embeds_as_float32_does_within_the_bound(
    hf_clap, device: str, dtype: torch.dtype
) -> None:
    """The agreement the CUDA path relies on, computed in the precision itself (CPU kernels
    stand in where no GPU is): clips and phrases of this test's own, not the product's probes,
    against float32 on the CPU."""
    own = replace(hf_clap, model=copy.deepcopy(hf_clap.model))  # placed() moves its model
    lowered = placed(own, device, dtype=dtype)
    assert next(lowered.model.parameters()).dtype == dtype
    assert next(lowered.model.parameters()).device.type == device
    assert lowered.info.dtype == str(dtype).removeprefix("torch.")
    clips = [music(10, seed=7), music(4, seed=8)]
    cosines = np.concatenate(
        [
            np.sum(embed_windows(hf_clap, clips) * embed_windows(lowered, clips), 1),
            np.sum(embed_text(hf_clap, TEXTS) * embed_text(lowered, TEXTS), 1),
        ]
    )
    assert cosines.min() >= HALF_PRECISION_MIN_COSINE


def test_lower_precision_is_kept_only_where_it_embeds_as_float32_does(hf_clap) -> None:
    perturbed = copy.deepcopy(hf_clap.model)
    random_weights(perturbed, seed=9)
    disagreeing = replace(hf_clap, model=perturbed)
    assert embedding_agreement(hf_clap, disagreeing) < HALF_PRECISION_MIN_COSINE
    # a model whose float16 copy disagrees (forced by a bar no copy meets) stays in float32
    own = replace(hf_clap, model=copy.deepcopy(hf_clap.model))
    fallback = placed(own, "cpu", dtype=torch.float16, min_cosine=1.01)
    assert fallback.info.dtype == "float32"
    assert next(fallback.model.parameters()).dtype == torch.float32
