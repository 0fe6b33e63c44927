"""A model cache entry is trusted by what it holds, not by its size: a tensor zeroed in place
(same size, the repro: loaded as is) is noticed and the model made again. MusiCNN's real
checkpoint, converted for real; CLAP's entries are kept by the same record (shared.files)."""

import hashlib
import json

from soundspan_plugins.musicnn.onnx_export import ensure_onnx


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_cached_model_altered_in_place_is_made_again(tmp_path):
    onnx_path, _ = ensure_onnx("MTT_musicnn", tmp_path)
    made = sha256(onnx_path)
    record = json.loads(onnx_path.with_suffix(".json").read_text())
    assert record["onnx_bytes_sha256"] == made

    data = bytearray(onnx_path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = bytes(4096)  # zero some weights, keep the size
    onnx_path.write_bytes(bytes(data))
    assert sha256(onnx_path) != made

    again, _ = ensure_onnx("MTT_musicnn", tmp_path)
    assert again == onnx_path and sha256(again) == made


def test_an_intact_cache_entry_is_used_as_it_is(tmp_path):
    onnx_path, _ = ensure_onnx("MTT_musicnn", tmp_path)
    written = onnx_path.stat().st_mtime_ns
    ensure_onnx("MTT_musicnn", tmp_path)
    assert onnx_path.stat().st_mtime_ns == written
