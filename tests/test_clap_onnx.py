"""The CLAP audio tower in ONNX: it embeds real music as the torch tower does, its workers import
neither torch nor transformers, it is exported once per model, and int8 runs only where it
agrees with float32 on the model's own weights (float32 runs, and the status says why, where not).

Whatever imports torch (tests.harness.clap_models, the export, the torch tower) is imported
inside the tests: a pool worker imports this module to run `heavy_modules`, and must see only
what the worker itself imported.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from soundspan_hooks import HOST
from soundspan_plugins.clap.frontend import MelFrontEnd
from soundspan_plugins.clap.inference import OnnxAudioTower
from soundspan_plugins.clap.versions import INT8_RECIPE, SAME_VERSION_MIN_COSINE
from soundspan_plugins.clap.windows import SAMPLE_RATE, int16_round_trip, select_windows
from soundspan_plugins.clap.worker import ModelSource, embed_file, load_audio_tower
from soundspan_plugins.shared.audio import decode_mono
from soundspan_plugins.shared.pool import ModelPool
from tests.harness.library import all_done, eventually, settled, write_wave

MUSIC = Path(__file__).parent / "fixtures" / "musicnn" / "anttis_1918.mp3"  # real, encoded


def heavy_modules(tower) -> list[str]:
    """Run in a worker: the torch and transformers modules it has imported."""
    return sorted(name for name in sys.modules if name.split(".")[0] in ("torch", "transformers"))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> ModelSource:
    from tests.harness.clap_models import save_tiny_clap

    directory = save_tiny_clap(tmp_path_factory.mktemp("clap") / "tiny", projection_dim=512)
    return ModelSource(str(directory), None, False, None, False)


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def exported(tiny_model, onnx_cache):
    from soundspan_plugins.clap.export_check import ensure_exported

    return ensure_exported(tiny_model, onnx_cache)


@pytest.fixture(scope="module")
def torch_tower(tiny_model):
    from soundspan_plugins.clap.loading import load_clap

    return load_clap(tiny_model.model, towers=("audio",))


@pytest.fixture(scope="module")
def music_windows() -> list[np.ndarray]:
    return select_windows(decode_mono(MUSIC, SAMPLE_RATE), max_windows=4)


def test_the_numpy_front_end_computes_the_feature_extractors_features(
    torch_tower, music_windows
) -> None:
    extractor = torch_tower.feature_extractor
    front_end = MelFrontEnd(extractor.mel_filters_slaney, 1024, 480, channels=1)
    clips = [music_windows[0], music_windows[1][: SAMPLE_RATE * 3]]  # a whole one, a padded one
    expected = extractor(
        [int16_round_trip(clip) for clip in clips],
        sampling_rate=SAMPLE_RATE,
        truncation=extractor.truncation,
        padding="repeatpad",
        return_tensors="np",
    )["input_features"]
    np.testing.assert_allclose(front_end(clips), expected, rtol=0, atol=1e-4)


def test_the_onnx_tower_embeds_real_music_as_torch_does(
    exported, torch_tower, music_windows
) -> None:
    from soundspan_plugins.clap.embedding import embed_windows

    assert exported.accepted and exported.agreement >= SAME_VERSION_MIN_COSINE
    expected = embed_windows(torch_tower, music_windows, batch_size=3)
    actual = OnnxAudioTower(exported.files).embed_windows(music_windows, batch_size=3)
    assert [window.size < 480_000 for window in music_windows] == [False, False, True]
    assert np.sum(expected * actual, axis=1).min() >= SAME_VERSION_MIN_COSINE


async def test_a_worker_embeds_a_track_without_importing_torch_or_transformers(
    tiny_model, exported, torch_tower
) -> None:
    from soundspan_plugins.clap.embedding import embed_track

    pool = ModelPool("CLAP", 1, load_audio_tower, (tiny_model, exported.files, "cpu", 1))
    try:
        result = await pool.run(embed_file, str(MUSIC), 12, 4)
        imported = await pool.run(heavy_modules)
    finally:
        await pool.close()
    assert imported == []
    expected = embed_track(torch_tower, decode_mono(MUSIC, SAMPLE_RATE), max_windows=12)
    assert float(np.asarray(result.embedding) @ expected) >= SAME_VERSION_MIN_COSINE


def cache_read_in_a_fresh_process(source: ModelSource, cache_dir: Path) -> tuple:
    """Run in a process of its own: what the host sees of the cache before it imports torch."""
    from soundspan_plugins.clap.tower_cache import tower_cached

    seen = tuple(tower_cached(source, cache_dir, wanted) for wanted in ("fp32", "int8"))
    return seen, heavy_modules(None)


async def test_the_host_tells_a_first_start_from_the_cache_without_torch(
    tiny_model, onnx_cache, exported, tmp_path
) -> None:
    from soundspan_plugins.clap.precision import ensure_int8
    from soundspan_plugins.shared.pool import run_in_own_process

    empty = await run_in_own_process("cache", cache_read_in_a_fresh_process, tiny_model, tmp_path)
    exported_only = await run_in_own_process(
        "cache", cache_read_in_a_fresh_process, tiny_model, onnx_cache
    )
    ensure_int8(exported.files)
    both = await run_in_own_process("cache", cache_read_in_a_fresh_process, tiny_model, onnx_cache)
    assert empty == ((False, False), [])
    assert exported_only[1] == [] and exported_only[0][0]  # int8: whether its test ran before
    assert both == ((True, True), [])


def test_the_graph_keeps_its_weights_in_a_file_beside_it_that_the_record_vouches_for(
    tiny_model, onnx_cache, exported
) -> None:
    """Exported without its weights (torch's exporter would hold them three times over in
    memory), the weights then written one tensor at a time into a file of their own: one the
    cache's record checks like the graph, so an altered weights file is exported again."""
    import onnx

    from soundspan_plugins.clap.export_check import ensure_exported
    from soundspan_plugins.clap.inference import INPUT_NAME
    from soundspan_plugins.clap.tower_cache import EXPORTER_VERSION, export_entry

    _, graph, weights, _, _ = export_entry(tiny_model, onnx_cache)
    assert exported.files.graph == graph
    model = onnx.load(str(graph), load_external_data=False)
    assert [value.name for value in model.graph.input] == [INPUT_NAME]
    assert {tensor.data_location for tensor in model.graph.initializer} == {
        onnx.TensorProto.EXTERNAL
    }
    named = {entry.value for tensor in model.graph.initializer for entry in tensor.external_data}
    assert weights.name in named and weights.stat().st_size > 4 * graph.stat().st_size

    written = weights.read_bytes()
    middle = slice(len(written) // 2, len(written) // 2 + 64)
    altered = bytearray(written)
    altered[middle] = bytes(byte ^ 0xFF for byte in written[middle])  # same size
    weights.write_bytes(bytes(altered))
    # an older exporter's files for the same weights go with the next export; others' stay
    older = [
        graph.with_name(graph.name.replace(f"-e{EXPORTER_VERSION}.onnx", f"-e1{end}"))
        for end in (".onnx", "-weights.bin", "-int8-dynamic-v1.onnx", ".json")
    ]
    another_model = graph.with_name("clap-audio-0123456789abcdef-e1.onnx")
    for path in (*older, another_model):
        path.write_bytes(b"old")
    again = ensure_exported(tiny_model, onnx_cache)
    assert again.files.graph == graph and weights.read_bytes() == written
    assert not any(path.exists() for path in older) and another_model.exists()


def choice_in_a_fresh_process(source: ModelSource, cache_dir: Path) -> tuple:
    """Run in a process of its own: a later start's choice of tower, as the host makes it."""
    from soundspan_plugins.clap.precision import choose_tower

    choices = [choose_tower(source, cache_dir, wanted, "cpu") for wanted in ("fp32", "int8")]
    return [choice.onnx.precision for choice in choices], heavy_modules(None)


async def test_a_later_start_chooses_the_tower_from_the_cache_without_torch(
    tiny_model, onnx_cache, exported
) -> None:
    """The host keeps no torch (nor transformers: 370 MiB) for choosing a cached tower, nor
    for the choice a first start's export process hands it (precision.TowerChoice)."""
    from soundspan_plugins.clap.precision import ensure_int8
    from soundspan_plugins.shared.pool import run_in_own_process

    ensure_int8(exported.files)
    chosen = await run_in_own_process("choice", choice_in_a_fresh_process, tiny_model, onnx_cache)
    assert chosen == (["fp32", "int8"], [])


def check_in_a_fresh_process(source: ModelSource, cache_dir: Path) -> tuple:
    """Run in a process of its own: a first start's check of the export torch left."""
    from soundspan_plugins.clap.export_check import check_export

    checked = check_export(source, cache_dir)
    return checked.agreement, heavy_modules(None)


async def test_the_export_awaits_a_check_that_runs_without_torch(tiny_model, tmp_path) -> None:
    """A first start exports in one process (torch) and checks in another (onnxruntime alone:
    beside torch's imports the check was the export's peak). Until the check records it, no
    one trusts the export; the check removes what only it needed."""
    from soundspan_plugins.clap.export_check import awaits_check
    from soundspan_plugins.clap.onnx_export import export_unchecked
    from soundspan_plugins.clap.tower_cache import cached_export, export_entry, unchecked_entry
    from soundspan_plugins.shared.pool import run_in_own_process

    export_unchecked(tiny_model, tmp_path)
    assert cached_export(tiny_model, tmp_path) is None and awaits_check(tiny_model, tmp_path)
    agreement, imported = await run_in_own_process(
        "check", check_in_a_fresh_process, tiny_model, tmp_path
    )
    assert imported == [] and agreement >= SAME_VERSION_MIN_COSINE
    cached = cached_export(tiny_model, tmp_path)
    assert cached is not None and cached.agreement == agreement
    _, graph, _, _, _ = export_entry(tiny_model, tmp_path)
    assert not any(path.exists() for path in unchecked_entry(graph))
    assert not awaits_check(tiny_model, tmp_path)


def test_an_altered_export_awaiting_its_check_is_exported_again(tiny_model, tmp_path) -> None:
    from soundspan_plugins.clap.export_check import awaits_check, ensure_exported
    from soundspan_plugins.clap.onnx_export import export_unchecked
    from soundspan_plugins.clap.tower_cache import export_entry, unchecked_entry

    export_unchecked(tiny_model, tmp_path)
    _, graph, _, _, _ = export_entry(tiny_model, tmp_path)
    reference, _ = unchecked_entry(graph)
    np.save(reference, -np.load(reference))  # torch's embeddings, not what it computed
    assert not awaits_check(tiny_model, tmp_path)
    assert ensure_exported(tiny_model, tmp_path).accepted


def test_a_first_export_that_fails_says_why(tiny_model, tmp_path, monkeypatch) -> None:
    """The export process hands the host its error (the tracer's have no common base, and may
    not pickle): the host then runs the torch tower and the status says why (runtime.py)."""
    from soundspan_plugins.clap.precision import FirstExport, export_first

    def fail(source, cache_dir):
        raise RuntimeError("the tracer met an op it cannot export")

    monkeypatch.setattr("soundspan_plugins.clap.onnx_export.export_unchecked", fail)
    assert export_first(tiny_model, tmp_path, "cpu") == FirstExport(
        failed="the tracer met an op it cannot export"
    )


def test_a_second_start_reuses_the_export_and_the_int8_check(
    tiny_model, onnx_cache, exported
) -> None:
    from soundspan_plugins.clap.precision import choose_tower

    first = choose_tower(tiny_model, onnx_cache, "int8", "cpu")
    written = {path: path.stat().st_mtime_ns for path in onnx_cache.iterdir()}
    again = choose_tower(tiny_model, onnx_cache, "int8", "cpu")
    assert {path: path.stat().st_mtime_ns for path in onnx_cache.iterdir()} == written
    assert first.onnx.graph == again.onnx.graph and again.detail is None
    assert again.onnx.precision == "int8" and again.onnx.graph.name.endswith(f"-{INT8_RECIPE}.onnx")
    assert not [path for path in written if path.name.startswith(".partial-")]


def test_int8_below_the_bound_falls_back_to_fp32_and_says_why(
    tiny_model, onnx_cache, exported, caplog
) -> None:
    from soundspan_plugins.clap.precision import choose_tower

    choice = choose_tower(tiny_model, onnx_cache, "int8", "cpu", min_cosine=1.0)
    assert (choice.onnx.graph, choice.onnx.precision) == (exported.files.graph, "fp32")
    assert "int8 refused" in choice.detail and "running fp32" in choice.detail
    assert "int8 refused" in caplog.text
    auto = choose_tower(tiny_model, onnx_cache, "auto", "cpu")
    assert (auto.onnx.graph, auto.onnx.precision, auto.detail) == (
        exported.files.graph,
        "fp32",
        None,
    )


async def test_a_host_whose_int8_fails_the_check_analyzes_in_fp32_and_says_so(
    fast_host, monkeypatch, tiny_model, music_dir
) -> None:
    # no int8 graph can meet it
    monkeypatch.setattr("soundspan_plugins.clap.versions.INT8_MIN_COSINE", 1.0)
    monkeypatch.setenv("SOUNDSPAN_CLAP__ENABLED", "true")
    monkeypatch.setenv("SOUNDSPAN_CLAP__MODEL", tiny_model.model)
    monkeypatch.setenv("CLAP_PRECISION", "int8")
    write_wave(music_dir / "noise.wav", np.random.default_rng(3).uniform(-0.5, 0.5, 96000), 48000)
    client = await fast_host("[clap]\nworkers = 1\n")
    host = client.app[HOST]
    await eventually(lambda: settled(host.engine, 1), timeout=120, what="CLAP")
    await all_done(host.engine, "clap", 1)
    [clap] = [info for info in await host.describe_analyzers() if info.name == "clap"]
    assert clap.state == "ready" and clap.device == "cpu (fp32)"
    assert "int8 refused" in clap.detail and "< 1.0" in clap.detail
    assert clap.version.endswith(f"-{INT8_RECIPE}")  # int8's version, as the setting says
