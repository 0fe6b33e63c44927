"""MusiCNN in OpenVINO, fp32 and NNCF int8, against onnxruntime fp32 (issue 27 item 4).

An experiment, not the plugin: OpenVINO and NNCF are not dependencies of the host
(`.venv/bin/pip install -e '.[musicnn,openvino-bench]'` first). The graph is the plugin's own
fp32 ONNX (`onnx_export.ensure_onnx`), the patches its own front end (`frontend.read_patches`), the
summary its own (`MusicnnTagger.summarize`: the mean over a track's patches, batch 1 as
`[musicnn] batch_size` defaults to). Every runtime gets one thread: onnxruntime as the plugin
sets it, OpenVINO with INFERENCE_NUM_THREADS=1, NUM_STREAMS=1, the latency hint and f32
inference precision, on the plugin's batch shape [1, 187, 96].

Variants (`--variants`): `ort` (the reference), `ov` (OpenVINO fp32), and NNCF post-training
quantizations (`nncf.quantize`) named `SCOPE-PRESET[-full_bias][-nofix][-minmax][-more]`:
  * SCOPE: `timbral` (only the 7x38 and 7x67 front-end convolutions in int8, every other
    Convolution/MatMul in ignored_scope), `frontend` (the five front-end convolutions),
    `convs` (every Convolution, the dense layers fp32); these three also ignore the types
    NNCF would otherwise quantize on their own (BatchNorm, Add, Concat, ReduceMean inputs),
    so int8 happens only at the chosen convolutions' inputs; `all`: NNCF's own choice;
  * PRESET: `perf` (symmetric activations) or `mixed` (asymmetric activations);
  * `full_bias`: fast_bias_correction=False; `nofix`: overflow_fix DISABLE (NNCF's default
    halves the first layer's weight range, for CPUs without VNNI; this one has VNNI);
    `minmax`: activation ranges from the global min/max (NNCF's default averages per-sample
    minima and maxima);
  * `more`: calibration on the shipped clips plus --extra patches of `hyperrogue-music`
    (real music of a third album, not in the held-out set); otherwise the clips alone
    (`precision.calibration_patches`, overlapping patches, as the plugin's int8 uses).
Held out: Debian's `drascula-music` and `fillets-ng-data` (41 tracks, bench/real_music.py).

Per variant: per-patch time at batch 1 (median wall of --runs, and process CPU time / run,
the better of two rounds), inference over every held-out track (CPU and wall, scaled to a
4-min track = 80 patches), the load average, and quality against onnxruntime fp32 as
bench/musicnn.py computes it. With --profile, OpenVINO's per-node counters (PERF_COUNT, a
separately compiled copy) say which kernel ran each layer and its milliseconds.

    .venv/bin/python bench/musicnn_openvino.py [--variants ort,ov,timbral-mixed,...]
                                               [--tracks N] [--runs 200] [--extra 400]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# bench/musicnn.py would hide the musicnn wheel (the weights): this folder goes last.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _BENCH]
sys.path.append(str(_BENCH))
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402

import numpy as np  # noqa: E402
from real_music import debian_music, same_album_at_k  # noqa: E402

from soundspan_plugins.musicnn.frontend import N_MELS, PATCH_FRAMES, read_patches  # noqa: E402
from soundspan_plugins.musicnn.inference import MusicnnTagger  # noqa: E402
from soundspan_plugins.musicnn.network import EMBEDDING_NAME, TAGGRAM_NAME  # noqa: E402
from soundspan_plugins.musicnn.onnx_export import ensure_onnx  # noqa: E402
from soundspan_plugins.musicnn.precision import MAX_TAG_DIFF, calibration_patches  # noqa: E402

HELD_OUT = ("drascula-music", "fillets-ng-data")
EXTRA_ALBUM = "hyperrogue-music"
TRACK_PATCHES = 80  # a 4-minute track at 3-s patches
TIMBRAL = ("conv2d_10/WithoutBiases", "conv2d_1_20/WithoutBiases")  # 7x38, 7x67 (OV names)
FRONTEND = (*TIMBRAL, *(f"conv2d_{i}_{j}/WithoutBiases" for i, j in ((2, 30), (3, 40), (4, 50))))
OV_CONFIG = {
    "INFERENCE_NUM_THREADS": 1,
    "NUM_STREAMS": 1,
    "PERFORMANCE_HINT": "LATENCY",
    "INFERENCE_PRECISION_HINT": "f32",
}


class OpenvinoTagger(MusicnnTagger):
    """The plugin's tagger (its summarize) with an OpenVINO compiled model inside."""

    def __init__(self, compiled, card) -> None:
        self.card = card
        self._request = compiled.create_infer_request()
        self._outputs = (compiled.output(TAGGRAM_NAME), compiled.output(EMBEDDING_NAME))

    def run(self, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        result = self._request.infer([np.ascontiguousarray(patches, np.float32)])
        return result[self._outputs[0]].copy(), result[self._outputs[1]].copy()


def ov_model(onnx_path: Path):
    import openvino as ov

    model = ov.Core().read_model(str(onnx_path))
    model.reshape([1, PATCH_FRAMES, N_MELS])  # the plugin's batch shape
    return model


def quantize(onnx_path: Path, variant: str, clips: np.ndarray, extra: np.ndarray):
    """NNCF post-training quantization of the OpenVINO model, as the variant's name says."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    scope, preset, *flags = variant.split("-")
    PRESETS = {"perf": nncf.QuantizationPreset.PERFORMANCE, "mixed": nncf.QuantizationPreset.MIXED}
    model = ov_model(onnx_path)
    weighted = [
        op.get_friendly_name()
        for op in model.get_ordered_ops()
        if op.get_type_name() in ("Convolution", "MatMul")
    ]
    keep = {"timbral": TIMBRAL, "frontend": FRONTEND, "convs": weighted[:-2], "all": weighted}
    ignored = [name for name in weighted if name not in keep[scope]]
    # NNCF's CPU defaults also quantize the inputs of BatchNorm, Add, Concat and ReduceMean:
    # left to it (`all`), those become standalone fp32 -> int8 -> fp32 round trips
    types = [] if scope == "all" else ["BatchNormInference", "Add", "Concat", "ReduceMean"]
    data = np.concatenate([clips, extra]) if "more" in flags else clips
    fix = OverflowFix.DISABLE if "nofix" in flags else OverflowFix.FIRST_LAYER
    advanced = AdvancedQuantizationParameters(overflow_fix=fix)
    if "minmax" in flags:  # the global min and max, as onnxruntime's MinMax, not NNCF's means
        advanced.activations_range_estimator_params = RangeEstimatorParametersSet.MINMAX
    started = time.monotonic()
    quantized = nncf.quantize(
        model,
        nncf.Dataset(list(data[:, np.newaxis])),
        preset=PRESETS[preset],
        subset_size=len(data),
        fast_bias_correction="full_bias" not in flags,
        ignored_scope=nncf.IgnoredScope(names=ignored, types=types, validate=False),
        advanced_parameters=advanced,
    )
    fq = sum(op.get_type_name() == "FakeQuantize" for op in quantized.get_ordered_ops())
    print(
        f"  {variant}: {len(data)} calibration patches, {fq} FakeQuantize, "
        f"{time.monotonic() - started:.1f} s",
        file=sys.stderr,
    )
    return quantized


def make_tagger(variant: str, onnx_path: Path, card, clips, extra) -> tuple:
    """(tagger, OpenVINO model or None) of a variant."""
    if variant == "ort":
        return MusicnnTagger(onnx_path, card, threads=1), None
    model = ov_model(onnx_path) if variant == "ov" else quantize(onnx_path, variant, clips, extra)
    return compile_tagger(model, card), model


def compile_tagger(model, card, profile: bool = False) -> OpenvinoTagger:
    import openvino as ov

    config = {**OV_CONFIG, "PERF_COUNT": True} if profile else OV_CONFIG
    return OpenvinoTagger(ov.Core().compile_model(model, "CPU", config), card)


def patch_latency(tagger, runs: int) -> tuple[float, float]:
    """(median wall, mean process CPU) seconds of one batch-1 patch, random input as
    bench/musicnn_profile.py's patch_latency."""
    patch = np.random.default_rng(1).random((1, PATCH_FRAMES, N_MELS), np.float32) * 3
    for _ in range(5):
        tagger.run(patch)
    walls = []
    cpu_started = time.process_time()
    for _ in range(runs):
        started = time.perf_counter()
        tagger.run(patch)
        walls.append(time.perf_counter() - started)
    return statistics.median(walls), (time.process_time() - cpu_started) / runs


def held_out_pass(tagger, tracks: dict[Path, np.ndarray]) -> tuple[dict, float, float]:
    """Each track summarised at batch 1; (results, CPU s per patch, wall s per patch)."""
    cpu, wall = time.process_time(), time.perf_counter()
    results = {path: tagger.summarize(p[i : i + 1] for i in range(len(p))) for path, p in tracks.items()}  # noqa: E501  # fmt: skip
    patches = sum(len(p) for p in tracks.values())
    return results, (time.process_time() - cpu) / patches, (time.perf_counter() - wall) / patches


def quality(reference: dict, results: dict, card, albums: dict) -> dict:
    """Against onnxruntime fp32, as bench/musicnn.py's report_quality computes it."""
    diffs, same_top, same_set, tie_gaps, cosines = [], 0, 0, [0.0], []
    for path, expected in reference.items():
        actual = results[path]
        diffs.append(float(np.abs(expected.tag_probabilities - actual.tag_probabilities).max()))
        want, got = ([t for t, _ in r.top_tags(card.tags)] for r in (expected, actual))
        same_top += want == got
        same_set += set(want) == set(got)
        if want != got:  # how close fp32's own ranks 1 to 6 were: a near tie swaps on any noise
            tie_gaps.append(float((-np.diff(np.sort(expected.tag_probabilities)[::-1][:6])).min()))
        a, b = expected.embedding, actual.embedding
        cosines.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
    embeddings = np.array([results[path].embedding for path in reference])
    return {
        "worst": max(diffs),
        "median": statistics.median(diffs),
        "within": sum(d <= MAX_TAG_DIFF for d in diffs),
        "top5": same_top / len(diffs),
        "top5_set": same_set / len(diffs),
        "tie_gap": max(tie_gaps),
        "cos_worst": min(cosines),
        "cos_median": statistics.median(cosines),
        "retrieval": same_album_at_k(embeddings, [albums[p] for p in reference], k=5),
    }


def ov_profile(tagger: OpenvinoTagger, runs: int = 20) -> list[tuple[str, str, str, float]]:
    """(layer, type, kernel, ms per patch) of the heaviest nodes, OpenVINO's own counters."""
    patch = np.random.default_rng(1).random((1, PATCH_FRAMES, N_MELS), np.float32) * 3
    tagger.run(patch)
    totals: dict[tuple[str, str, str], float] = defaultdict(float)
    for _ in range(runs):
        tagger.run(patch)
        for info in tagger._request.profiling_info:
            key = (info.node_name, info.node_type, info.exec_type)
            totals[key] += info.real_time.total_seconds() * 1000 / runs
    ranked = sorted(((*key, ms) for key, ms in totals.items()), key=lambda row: -row[3])
    return [row for row in ranked if row[3] >= 0.1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--variants", default="ort,ov,timbral-mixed,timbral-perf,timbral-mixed-nofix",
        type=lambda value: value.split(","),
    )  # fmt: skip
    parser.add_argument("--tracks", type=int, default=0, help="held-out tracks (0: all)")
    parser.add_argument("--runs", type=int, default=200, help="batch-1 runs per latency")
    parser.add_argument("--extra", type=int, default=400, help="hyperrogue patches for -more")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/soundspan-musicnn-openvino"))
    parser.add_argument("--profile", action="store_true", help="OpenVINO per-node profile")
    args = parser.parse_args()

    import openvino

    onnx_path, card = ensure_onnx(cache_dir=args.cache / "models")
    music = debian_music()
    held = [track for track in music if track.album in HELD_OUT][: args.tracks or None]
    albums = {track.path: track.album for track in held}
    print(f"front end on {len(held)} held-out tracks ...", file=sys.stderr)
    cpu = time.process_time()
    tracks = {track.path: read_patches(track.path) for track in held}
    frontend_s = (time.process_time() - cpu) / sum(map(len, tracks.values())) * TRACK_PATCHES
    clips = calibration_patches()
    extra = np.zeros((0, PATCH_FRAMES, N_MELS), np.float32)
    if any("more" in variant for variant in args.variants):
        others = [read_patches(t.path) for t in music if t.album == EXTRA_ALBUM]
        pool = np.concatenate(others)
        pick = np.random.default_rng(0).choice(len(pool), min(args.extra, len(pool)), False)
        extra = pool[np.sort(pick)]

    rows, reference, taggers = [], None, {}
    for variant in ["ort", *(v for v in args.variants if v != "ort")]:
        tagger, model = make_tagger(variant, onnx_path, card, clips, extra)
        taggers[variant] = tagger
        load = os.getloadavg()[0]
        median_s, cpu_s = patch_latency(tagger, args.runs)
        results, track_cpu, track_wall = held_out_pass(tagger, tracks)
        reference = reference or results
        row = {"variant": variant, "median_s": median_s, "cpu_s": cpu_s, "track_cpu": track_cpu,
               "track_wall": track_wall, "load": (load, os.getloadavg()[0]),
               **quality(reference, results, card, albums)}  # fmt: skip
        rows.append(row)
        print(f"  {variant}: {1000 * cpu_s:.1f} ms CPU/patch, worst {row['worst']:.4f}",
              file=sys.stderr)  # fmt: skip
        if args.profile and model is not None:
            for name, op, kernel, ms in ov_profile(compile_tagger(model, card, profile=True)):
                print(f"    {ms:6.2f} ms  {op:<16} {kernel:<36} {name}", file=sys.stderr)
    # a second latency round in reverse order: a burst of other people's load hits another one
    for row in reversed(rows):
        again = patch_latency(taggers[row["variant"]], args.runs)
        row["median_s"], row["cpu_s"] = min(row["median_s"], again[0]), min(row["cpu_s"], again[1])
    report(args, rows, tracks, openvino.__version__, frontend_s)


def report(args, rows, tracks, ov_version, frontend_s) -> None:
    import nncf
    import onnxruntime

    print("\n== MusiCNN: OpenVINO fp32 / NNCF int8 against onnxruntime fp32 ==")
    print(f"  {sys.executable} bench/musicnn_openvino.py --variants {','.join(args.variants)} "
          f"--runs {args.runs} --extra {args.extra}")  # fmt: skip
    print(f"  onnxruntime {onnxruntime.__version__}, openvino {ov_version}, nncf {nncf.__version__}"
          f"; {len(tracks)} held-out tracks, {sum(map(len, tracks.values()))} patches")  # fmt: skip
    base = rows[0]
    print(f"  front end (decode + log-mel, plugin's frontend.read_patches), CPU per 4-min track: "
          f"{frontend_s:.2f} s; end to end = front end + inference:")  # fmt: skip
    for row in rows:
        inference = TRACK_PATCHES * row["track_cpu"]
        speedup = (frontend_s + TRACK_PATCHES * base["track_cpu"]) / (frontend_s + inference)
        print(f"    {row['variant']:<28} {frontend_s + inference:.2f} s, {speedup:.2f}x")
    print("| variant | CPU ms/patch (median wall) | 4-min track CPU s (wall) | speedup CPU "
          "(track) | worst / median tag diff | within 0.01 | top-5 identical (same set; "
          "changed tracks' fp32 top-6 gap, max) | cosine worst | retrieval | load |")  # fmt: skip
    print("|" + " --- |" * 10)
    for row in rows:
        print(
            f"| {row['variant']} | {1000 * row['cpu_s']:.1f} ({1000 * row['median_s']:.1f}) "
            f"| {TRACK_PATCHES * row['track_cpu']:.2f} ({TRACK_PATCHES * row['track_wall']:.2f}) "
            f"| {base['cpu_s'] / row['cpu_s']:.2f}x ({base['track_cpu'] / row['track_cpu']:.2f}x) "
            f"| {row['worst']:.4f} / {row['median']:.4f} | {row['within']}/{len(tracks)} "
            f"| {100 * row['top5']:.0f} % ({100 * row['top5_set']:.0f} %; {row['tie_gap']:.4f}) "
            f"| {row['cos_worst']:.5f} | {row['retrieval']:.3f} "
            f"| {row['load'][0]:.1f}-{row['load'][1]:.1f} |"
        )


if __name__ == "__main__":
    main()
