"""The musicnn model core: checkpoint reader, ONNX port, front end and cache, on real files.

Parity is checked against ``tests/fixtures/musicnn/reference.json``, written by the original
TensorFlow musicnn (see bench/musicnn_reference.py) on the three real music clips beside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from pathlib import Path

import av
import numpy as np
import pytest

from soundspan_plugins.musicnn.checkpoint import CheckpointError, read_checkpoint, snappy_decompress
from soundspan_plugins.musicnn.frontend import (
    PATCH_FRAMES,
    log_mel_spectrogram,
    mel_filterbank,
    read_patches,
    stream_log_mel,
    stream_patches,
)
from soundspan_plugins.musicnn.inference import MusicnnTagger
from soundspan_plugins.musicnn.network import (
    ModelNotAvailable,
    checkpoint_files,
    checkpoint_index,
    convert,
)
from soundspan_plugins.musicnn.onnx_export import ensure_onnx
from soundspan_plugins.musicnn.tags import MSD_TAGS, MTT_TAGS
from soundspan_plugins.shared.audio import UnreadableAudio, decode_mono

FIXTURES = Path(__file__).parent / "fixtures" / "musicnn"
REFERENCE = json.loads((FIXTURES / "reference.json").read_text())
CLIPS = sorted(REFERENCE["clips"])
MODELS = ("MSD_musicnn", "MTT_musicnn")
# Lossless or same-decoder clips: the whole pipeline must match the original. The Opus clip is
# decoded by libsndfile in the reference, which ignores Opus pre-skip (a 6.5 ms shift) and uses
# another decoder, so only the network is compared tightly there.
SAME_SAMPLES_CLIPS = ("anttis_1918.mp3", "anttis_funkyrobot_16k.flac")


pytestmark = pytest.mark.usefixtures("musicnn_weights")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("musicnn-cache")


@pytest.fixture(scope="module")
def taggers(cache_dir: Path) -> dict[str, MusicnnTagger]:
    taggers = {}
    for model in MODELS:
        onnx_path, card = ensure_onnx(model, cache_dir)
        taggers[model] = MusicnnTagger(onnx_path, card, threads=1)
    return taggers


@pytest.fixture(scope="module")
def clip_patches() -> dict[str, np.ndarray]:
    return {clip: read_patches(FIXTURES / clip) for clip in CLIPS}


# --- checkpoint -------------------------------------------------------------------------------

EXPECTED_SHAPES = {
    "batch_normalization/gamma": (1,),
    "conv2d/kernel": (7, 38, 1, 204),
    "conv2d_1/kernel": (7, 67, 1, 204),
    "conv2d_2/kernel": (128, 1, 1, 51),
    "conv2d_3/kernel": (64, 1, 1, 51),
    "conv2d_4/kernel": (32, 1, 1, 51),
    "conv2d_5/kernel": (7, 561, 1, 64),
    "conv2d_6/kernel": (7, 64, 1, 64),
    "conv2d_7/kernel": (7, 64, 1, 64),
    "batch_normalization_9/moving_variance": (1506,),
    "dense/kernel": (1506, 200),
    "batch_normalization_10/beta": (200,),
    "dense_1/kernel": (200, 50),
    "dense_1/bias": (50,),
}


@pytest.mark.parametrize("model", MODELS)
def test_checkpoint_reader_reads_every_tensor_with_its_shape(model: str) -> None:
    tensors = read_checkpoint(checkpoint_index(model))
    # 22 layers' variables + Adam's two slots for each trainable one + the beta powers.
    assert len(tensors) == 150
    for name, shape in EXPECTED_SHAPES.items():
        assert tensors[name].shape == shape, name
        assert tensors[name].dtype == np.float32
        assert np.isfinite(tensors[name]).all()
    assert all(tensors[f"batch_normalization_{i}/moving_variance"].min() > 0 for i in range(1, 11))


def _copy_checkpoint(model: str, destination: Path) -> Path:
    destination.mkdir(parents=True, exist_ok=True)
    for path in checkpoint_files(checkpoint_index(model)):
        shutil.copy(path, destination / path.name)
    return destination / ".index"


def test_checkpoint_reader_names_the_file_when_data_is_truncated(tmp_path: Path) -> None:
    index = _copy_checkpoint("MSD_musicnn", tmp_path)
    data = tmp_path / ".data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:1_000_000])
    with pytest.raises(CheckpointError, match=r"truncated") as caught:
        read_checkpoint(index)
    assert str(tmp_path) in str(caught.value)


def test_checkpoint_reader_detects_a_flipped_weight(tmp_path: Path) -> None:
    index = _copy_checkpoint("MSD_musicnn", tmp_path)
    data = tmp_path / ".data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[5_000_000] ^= 0x40
    data.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="checksum"):
        read_checkpoint(index)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda raw: raw[:-8] + b"\0" * 8, "magic number"),
        (lambda raw: raw[:30], "too short"),
        (lambda raw: raw[:200] + bytes([raw[200] ^ 1]) + raw[201:], "checksum"),
    ],
)
def test_checkpoint_reader_rejects_a_damaged_index(tmp_path: Path, damage, message: str) -> None:
    index = _copy_checkpoint("MSD_musicnn", tmp_path)
    index.write_bytes(damage(index.read_bytes()))
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(index)


def test_checkpoint_reader_reports_a_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / ".index")


def test_snappy_blocks_are_decoded() -> None:
    # length 12, literal "abcd", then a 1-byte-offset copy of 8 bytes from 4 back (overlapping).
    assert snappy_decompress(bytes([12, 3 << 2]) + b"abcd" + bytes([(4 << 2) | 1, 4])) == (
        b"abcdabcdabcd"
    )


# --- network parity ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("clip", CLIPS)
def test_onnx_matches_tensorflow_on_the_same_patches(
    taggers: dict[str, MusicnnTagger], clip_patches: dict[str, np.ndarray], clip: str, model: str
) -> None:
    reference = REFERENCE["clips"][clip][model]["tf_on_our_patches"]
    taggram, embeddings = taggers[model].run(clip_patches[clip])
    assert taggram.shape == (reference["n_patches"], 50)
    np.testing.assert_allclose(taggram, reference["taggram"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(embeddings.mean(axis=0), reference["mean_embedding"], atol=1e-4)
    np.testing.assert_allclose(embeddings[0], reference["first_patch_embedding"], atol=1e-4)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("clip", SAME_SAMPLES_CLIPS)
def test_whole_pipeline_matches_the_original_extractor(
    taggers: dict[str, MusicnnTagger], clip: str, model: str
) -> None:
    reference = REFERENCE["clips"][clip][model]["original"]
    tagger = taggers[model]
    analysis = tagger.analyze(FIXTURES / clip)
    assert analysis.n_patches == reference["n_patches"]
    np.testing.assert_allclose(
        analysis.tag_probabilities, reference["mean_taggram"], rtol=0, atol=1e-4
    )
    assert [tag for tag, _ in analysis.top_tags(tagger.card.tags)] == reference["top5"]
    first_embedding = tagger.run(read_patches(FIXTURES / clip)[:1])[1][0]
    np.testing.assert_allclose(first_embedding, reference["first_patch_embedding"], atol=1e-3)


@pytest.mark.parametrize("model", MODELS)
def test_opus_clip_stays_close_to_the_original_despite_its_other_decoder(
    taggers: dict[str, MusicnnTagger], model: str
) -> None:
    reference = REFERENCE["clips"]["anttis_funkyrobot.opus"][model]["original"]
    analysis = taggers[model].analyze(FIXTURES / "anttis_funkyrobot.opus")
    top5 = [tag for tag, _ in analysis.top_tags(taggers[model].card.tags)]
    assert set(top5) == set(reference["top5"])
    np.testing.assert_allclose(
        analysis.tag_probabilities, reference["mean_taggram"], rtol=0, atol=0.05
    )


def test_model_cards_describe_the_outputs(taggers: dict[str, MusicnnTagger]) -> None:
    assert taggers["MSD_musicnn"].card.tags == MSD_TAGS
    assert taggers["MTT_musicnn"].card.tags == MTT_TAGS
    for tagger in taggers.values():
        assert tagger.card.embedding_dim == 200
        assert len(tagger.card.checkpoint_sha256) == 64


def test_unknown_model_is_refused_with_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ModelNotAvailable, match="MSD_musicnn"):
        convert("MSD_musicnn_big", tmp_path / "big.onnx")


# --- cache ------------------------------------------------------------------------------------


def test_cache_is_reused_and_keyed_by_the_checkpoint_contents(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first_path, first_card = ensure_onnx("MSD_musicnn", cache)
    stamp = first_path.stat().st_mtime_ns, first_path.stat().st_ino
    second_path, second_card = ensure_onnx("MSD_musicnn", cache)
    assert second_path == first_path and second_card == first_card
    assert (second_path.stat().st_mtime_ns, second_path.stat().st_ino) == stamp
    record = json.loads(first_path.with_suffix(".json").read_text())
    assert record["checkpoint_sha256"] == first_card.checkpoint_sha256
    assert record["checkpoint_files"][0].endswith(".index")

    # The same weights elsewhere share the entry; changed weights get their own.
    copy_index = _copy_checkpoint("MSD_musicnn", tmp_path / "copy")
    assert ensure_onnx("MSD_musicnn", cache, copy_index)[0] == first_path
    with (tmp_path / "copy" / ".data-00000-of-00001").open("ab") as data:
        data.write(b"\0" * 16)  # unused trailing bytes: still loadable, different hash
    changed_path, changed_card = ensure_onnx("MSD_musicnn", cache, copy_index)
    assert changed_path != first_path
    assert changed_card.checkpoint_sha256 != first_card.checkpoint_sha256
    assert not list(cache.glob(".partial-*"))


def test_cache_rebuilds_an_entry_left_half_written(tmp_path: Path) -> None:
    onnx_path, card = ensure_onnx("MTT_musicnn", tmp_path)
    onnx_path.write_bytes(onnx_path.read_bytes()[:1000])  # as if the crash hit mid-write
    rebuilt_path, rebuilt_card = ensure_onnx("MTT_musicnn", tmp_path)
    assert rebuilt_card == card
    assert rebuilt_path.stat().st_size > 1_000_000
    onnx_path.with_suffix(".json").write_text("{")  # a torn record is not trusted either
    assert ensure_onnx("MTT_musicnn", tmp_path) == (rebuilt_path, card)


# --- front end --------------------------------------------------------------------------------


def test_mel_filterbank_is_bit_identical_to_librosas() -> None:
    digest = hashlib.sha256(mel_filterbank().tobytes()).hexdigest()
    assert digest == REFERENCE["librosa_mel_filterbank_sha256"]


def test_streamed_log_mel_equals_the_whole_signal_computation() -> None:
    samples = np.concatenate(list(decode_mono(FIXTURES / "anttis_funkyrobot_16k.flac", 16000)))
    whole = log_mel_spectrogram(samples)
    assert whole.shape == (1 + len(samples) // 256, 96)
    rng = np.random.default_rng(7)
    for length in (len(samples), 70_000, 2048, 2047 + 256, 300):
        signal = samples[:length]
        cuts = np.sort(rng.integers(0, length, size=12))
        chunks = np.split(signal, cuts)
        streamed = np.concatenate(list(stream_log_mel(chunks)))
        np.testing.assert_array_equal(streamed, log_mel_spectrogram(signal))


def test_patches_are_non_overlapping_and_drop_the_remainder() -> None:
    frames = np.arange(500 * 96, dtype=np.float32).reshape(500, 96)
    for blocks in (np.array_split(frames, 7), [frames]):
        batches = list(stream_patches(blocks, batch_size=1))
        assert [len(batch) for batch in batches] == [1, 1]  # 126 trailing frames dropped
        patches = np.concatenate(batches)
        np.testing.assert_array_equal(patches.reshape(-1, 96), frames[: 2 * PATCH_FRAMES])


def _write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """Write int16 PCM (samples: [channels, n] floats in [-1, 1]) with FFmpeg."""
    channels = samples.shape[0]
    layout = "stereo" if channels == 2 else "mono"
    with av.open(str(path), "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=rate, layout=layout)
        pcm = np.round(samples * 32767).astype(np.int16).T.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout=layout)
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def test_audio_shorter_than_a_patch_is_repeat_padded(tmp_path: Path) -> None:
    samples = np.concatenate(list(decode_mono(FIXTURES / "anttis_funkyrobot_16k.flac", 16000)))
    short = _write_wav(tmp_path / "short.wav", samples[np.newaxis, 16_000:40_000], 16_000)
    patches = read_patches(short)
    assert patches.shape == (1, PATCH_FRAMES, 96)
    frames = log_mel_spectrogram(np.concatenate(list(decode_mono(short, 16000))))
    assert len(frames) == 1 + 24_000 // 256
    np.testing.assert_array_equal(patches[0], np.concatenate([frames, frames])[:PATCH_FRAMES])
    tiny = _write_wav(tmp_path / "tiny.wav", samples[np.newaxis, :100], 16_000)
    assert read_patches(tiny).shape == (1, PATCH_FRAMES, 96)


def test_silence_gives_zero_patches_and_the_networks_fixed_answer(
    tmp_path: Path, taggers: dict[str, MusicnnTagger]
) -> None:
    silent = _write_wav(tmp_path / "silence.wav", np.zeros((2, 5 * 44_100)), 44_100)
    patches = read_patches(silent)
    assert patches.shape == (1, PATCH_FRAMES, 96) and not patches.any()
    tagger = taggers["MSD_musicnn"]
    analysis = tagger.analyze(silent)
    expected = tagger.run(np.zeros((1, PATCH_FRAMES, 96), np.float32))[0][0]
    np.testing.assert_allclose(analysis.tag_probabilities, expected, atol=1e-6)
    assert np.isfinite(analysis.embedding).all()


def test_vbr_mp3_without_a_length_header_is_not_mistaken_for_truncated(tmp_path: Path) -> None:
    # FFmpeg guesses such a file's duration from its first (quiet, low-bitrate) frame, here
    # several times too long; only a Xing/Info/VBRI frame count is evidence of truncation.
    with av.open(str(FIXTURES / "anttis_1918.mp3")) as source:
        stereo = np.concatenate([frame.to_ndarray() for frame in source.decode(audio=0)], axis=1)
    stereo[:, : 10 * 44_100] = 0
    path = tmp_path / "vbr-no-xing.mp3"
    with av.open(str(path), "w", format="mp3", options={"write_xing": "0"}) as container:
        stream = container.add_stream("libmp3lame", rate=44_100, layout="stereo")
        stream.codec_context.qscale = 2  # VBR, about 190 kbit/s on music
        frame = av.AudioFrame.from_ndarray(stereo, format="fltp", layout="stereo")
        frame.sample_rate = 44_100
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    with av.open(str(path)) as probe:
        assert probe.duration / av.time_base > 40  # the misleading guess
    assert read_patches(path).shape == (8, PATCH_FRAMES, 96)


def _damaged_copies(directory: Path) -> dict[str, tuple[Path, str]]:
    mp3 = (FIXTURES / "anttis_1918.mp3").read_bytes()
    flac = (FIXTURES / "anttis_funkyrobot_16k.flac").read_bytes()
    noise = np.random.default_rng(3).bytes(200_000)
    files = {
        "empty.mp3": (b"", "empty"),
        "notes.mp3": (b"Shopping list: milk, eggs, a new amplifier.\n" * 20, "not an audio file"),
        "half.mp3": (mp3[: len(mp3) // 2], "truncated"),
        "half.flac": (flac[: len(flac) // 2], "truncated"),
        "garbled.mp3": (mp3[:100_000] + noise + mp3[300_000:], "damaged"),
    }
    out = {}
    for name, (content, reason) in files.items():
        (directory / name).write_bytes(content)
        out[name] = (directory / name, reason)
    # A canonical 44-byte WAV header announcing 0 bytes of 16 kHz mono 16-bit PCM.
    header = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36, b"WAVE", b"fmt ", 16, 1, 1,
                         16_000, 32_000, 2, 16, b"data", 0)  # fmt: skip
    (directory / "header-only.wav").write_bytes(header)
    out["header-only.wav"] = (directory / "header-only.wav", "no audio samples")
    os.mkfifo(directory / "pipe.mp3")
    out["pipe.mp3"] = (directory / "pipe.mp3", "not a regular file")
    return out


def test_a_missing_file_is_trouble_that_may_pass_not_an_unreadable_file(tmp_path: Path) -> None:
    # moved away while queued: the queue retries (and follows the move) instead of failing it
    with pytest.raises(FileNotFoundError):
        read_patches(tmp_path / "moved-away.ogg")


def test_unreadable_files_raise_a_clear_error_naming_the_file(tmp_path: Path) -> None:
    for name, (path, reason) in _damaged_copies(tmp_path).items():
        with pytest.raises(UnreadableAudio) as caught:
            read_patches(path)
        message = str(caught.value)
        assert name in message and reason in message, message
        assert caught.value.path == path
