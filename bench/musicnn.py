"""MusiCNN benchmark (issue 8): tracks per minute and memory per worker, as the product runs it.

Uses the plugin's own pieces, the way the host's `[musicnn]` plugin does:
`soundspan_plugins.musicnn.model_cache.ensure_onnx` converts the musicnn wheel's MSD weights to
ONNX (into a temp dir), and a `soundspan_plugins.shared.pool.ModelPool` of N spawned worker
processes, each loading `worker.load_tagger` once, runs `worker.analyze_file` per track (decode
with PyAV + soxr, log-mel front end, onnxruntime on CPU, batch 16 as the plugin's default).

Input (`--music`):
  * `real` (default): the Ogg Vorbis soundtracks Debian ships in `drascula-music` and
    `fillets-ng-data` (41 tracks, 70 minutes; bench/real_music.py fetches them once);
  * `synthetic`: a few distinct 4-minute 44.1 kHz stereo MP3 files (192 kb/s) made with PyAV in
    a temp dir: the real clip tests/fixtures/musicnn/anttis_1918.mp3 looped to 4 minutes, and
    synthetic music (chords with harmonics, kick/snare/hi-hat, noise; a key, tempo and seed each).
Synthetic tones hid the worker threads' fight over the cores (issue 16): measure on real music.

Reported, for each precision of `--precisions` (default fp32,int8: the float32 graph and the
int8 one `soundspan_plugins.musicnn.quantization` makes, as `[musicnn] precision` picks them):
  * four-minute tracks/min (audio minutes analyzed per minute / 4) for each pool layout
    (default: 1x1, 2x1 and 1x2 workers x threads) and precision, timed over --tracks tracks
    (default: every real track once) after every worker has loaded its model; the precisions
    run one after the other within each layout, so a change in the machine's load hits both;
  * peak RSS of each worker process (psutil, sampled every 0.1 s over the pool's children);
  * single-patch latency: onnxruntime, 1 thread, batch 1, median over many runs; beside it the
    physical floor: multiply-adds of one patch counted from the ONNX graph (Conv and
    Gemm/MatMul shapes after shape inference with batch 1) and this machine's measured
    single-core float32 GFLOP/s (a numpy matmul with one BLAS thread);
  * where a track's time goes, in one process with 1 thread: decode alone, decode + mel
    (the whole front end), and inference over the same patches at batch 16;
  * quality of each precision against fp32, from the first layout's results on every track
    (the Debian music is held out: int8 is calibrated on the clips the plugin ships): per track
    max |diff| of the 50 tag probabilities, top-5 identical (same tags, same order), embedding
    cosine, and retrieval: for each track the fraction of its 5 nearest neighbours (cosine on
    the embedding, itself excluded) from the same album, averaged over tracks, per precision.

Run from the repository root (one run takes about 3 to 5 minutes on 2 cores):

    .venv/bin/python bench/musicnn.py [--music real|synthetic] [--tracks N]
                                      [--layouts 1x1,2x1,1x2] [--precisions fp32,int8]
                                      [--batch-size N] [--keep]
                                      [--checkpoint <site-packages>/musicnn/MSD_musicnn/.index]

The trained weights come from the `musicnn==0.1.0` wheel (`pip install --no-deps`, as the
Makefile does); --checkpoint points at them when that wheel is in another environment.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# This file is called musicnn.py, and Python puts its folder first on sys.path: it would hide
# the musicnn wheel that holds the weights. Its folder goes last (still there for `common`).
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _BENCH]
sys.path.append(str(_BENCH))

# One BLAS/OMP thread in this process, so the single-core measurements are single-core.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import av  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime  # noqa: E402
from common import ChildMemory  # noqa: E402
from real_music import debian_music, same_album_at_k  # noqa: E402

from soundspan_plugins.musicnn import MusicnnSettings  # noqa: E402
from soundspan_plugins.musicnn.frontend import (  # noqa: E402
    N_MELS,
    PATCH_FRAMES,
    SAMPLE_RATE,
    iter_patch_batches,
)
from soundspan_plugins.musicnn.inference import MusicnnTagger  # noqa: E402
from soundspan_plugins.musicnn.model_cache import ensure_onnx  # noqa: E402
from soundspan_plugins.musicnn.quantization import MAX_TAG_DIFF, ensure_int8  # noqa: E402
from soundspan_plugins.musicnn.worker import analyze_file, load_tagger  # noqa: E402
from soundspan_plugins.shared.audio import decode_mono  # noqa: E402
from soundspan_plugins.shared.pool import ModelPool  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
REAL_CLIP = REPO / "tests" / "fixtures" / "musicnn" / "anttis_1918.mp3"
TRACK_SECONDS = 240.0
RATE = 44100
DEFAULT_BATCH_SIZE = MusicnnSettings().batch_size  # the plugin's default


# --- making 4-minute tracks -------------------------------------------------------------------


def write_mp3(path: Path, stereo: np.ndarray) -> None:
    """Encode [2, n] float32 samples in [-1, 1] at 44.1 kHz as a 192 kb/s MP3."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mp3", rate=RATE)
        stream.layout = "stereo"
        stream.bit_rate = 192_000
        block = 1152 * 64
        for start in range(0, stereo.shape[1], block):
            chunk = np.ascontiguousarray(stereo[:, start : start + block], np.float32)
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            frame.sample_rate = RATE
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def synthetic_song(seed: int) -> np.ndarray:
    """4 minutes of chords, bass, drums and noise: [2, n] float32 at 44.1 kHz."""
    rng = np.random.default_rng(seed)
    n = int(TRACK_SECONDS * RATE)
    t = np.arange(n, dtype=np.float64) / RATE
    bpm = 80 + 10 * seed
    beat = 60.0 / bpm
    root = 110.0 * 2 ** (rng.integers(0, 12) / 12)
    progression = [0, 5, 7, 3] if seed % 2 else [0, 9, 5, 7]
    bar = 4 * beat
    chord_index = (t // bar).astype(int) % len(progression)
    left = np.zeros(n)
    right = np.zeros(n)
    for interval in (0, 4 if seed % 3 else 3, 7, 12):
        frequency = root * 2 ** ((np.take(progression, chord_index) + interval) / 12)
        phase = 2 * np.pi * np.cumsum(frequency) / RATE
        voice = sum(np.sin(k * phase) / k**1.5 for k in range(1, 5))
        left += 0.06 * voice * (1 + 0.3 * np.sin(2 * np.pi * 0.2 * t))
        right += 0.06 * voice * (1 - 0.3 * np.sin(2 * np.pi * 0.2 * t))
    bass_frequency = root / 2 * 2 ** (np.take(progression, chord_index) / 12)
    bass = 0.15 * np.sin(2 * np.pi * np.cumsum(bass_frequency) / RATE)
    in_beat = np.mod(t, beat)
    kick = 0.5 * np.sin(2 * np.pi * (50 + 80 * np.exp(-in_beat * 30)) * in_beat)
    kick *= np.exp(-in_beat * 12)
    noise = rng.standard_normal(n)
    off_beat = np.mod(t + beat / 2, beat)
    snare = 0.2 * noise * np.exp(-off_beat * 20) * (np.mod(t // beat, 2) == 1)
    eighth = np.mod(t, beat / 2)
    hat = 0.05 * np.diff(noise, prepend=0) * np.exp(-eighth * 60)
    drums = kick + snare + hat + 0.01 * noise
    left += bass + drums
    right += bass + drums
    stereo = np.stack([left, right])
    stereo *= 0.9 / np.abs(stereo).max()
    return stereo.astype(np.float32)


def looped_real_clip() -> np.ndarray:
    """tests/fixtures/musicnn/anttis_1918.mp3 decoded and looped to 4 minutes, [2, n]."""
    with av.open(str(REAL_CLIP)) as container:
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=RATE)
        blocks = []
        for frame in container.decode(audio=0):
            blocks.extend(out.to_ndarray() for out in resampler.resample(frame))
        blocks.extend(out.to_ndarray() for out in resampler.resample(None))
    clip = np.concatenate(blocks, axis=1)
    n = int(TRACK_SECONDS * RATE)
    return np.tile(clip, (1, -(-n // clip.shape[1])))[:, :n].astype(np.float32)


def make_tracks(folder: Path, synthetic: int) -> list[Path]:
    """The real clip looped, plus `synthetic` synthetic songs, as 4-minute MP3 files."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "anttis_1918_looped.mp3"]
    write_mp3(paths[0], looped_real_clip())
    for seed in range(synthetic):
        paths.append(folder / f"synthetic_{seed}.mp3")
        write_mp3(paths[-1], synthetic_song(seed))
    return paths


# --- the pool, as the plugin runs it ---------------------------------------------------------


async def pool_throughput(
    onnx_path: Path,
    card,
    tracks: dict[Path, float],
    count: int,
    workers: int,
    threads: int,
    batch_size: int,
) -> dict:
    """Analyze `count` tracks (cycling over `tracks`: path -> seconds of audio) with a
    ModelPool; four-minute tracks/min, memory."""
    memory = ChildMemory()
    memory.start()
    pool = ModelPool(
        "musicnn-bench", workers, load_tagger, (str(onnx_path), card, threads, "cpu"), threads
    )
    try:
        started = time.monotonic()
        await pool.warm_up()
        warm_s = time.monotonic() - started
        rss_after_load = dict(memory.peaks)
        paths = list(tracks)
        work = [paths[index % len(paths)] for index in range(count)]
        started = time.monotonic()
        results = await asyncio.gather(
            *(pool.run(analyze_file, str(path), batch_size) for path in work)
        )
        elapsed = time.monotonic() - started
    finally:
        await pool.close()
        memory.stopping.set()
        memory.join()
    patches = sum(result.patches for result in results)
    return {
        "results": dict(zip(work, results, strict=True)),
        "workers": workers,
        "threads": threads,
        "model": onnx_path.name,
        "tracks": count,
        "seconds": elapsed,
        "audio_minutes": sum(tracks[path] for path in work) / 60,
        "tracks_per_min": 60.0 * sum(tracks[path] for path in work) / TRACK_SECONDS / elapsed,
        "patches": patches,
        "warm_up_s": warm_s,
        "rss_after_load_mib": sorted(rss / 2**20 for rss in rss_after_load.values()),
        "peak_rss_mib": sorted(rss / 2**20 for rss in memory.peaks.values()),
    }


# --- single-core numbers -----------------------------------------------------------------------


def multiply_adds_per_patch(onnx_path: Path) -> dict[str, int]:
    """Multiply-adds of one patch, per op type, from the graph's shapes with batch = 1."""
    model = onnx.load(str(onnx_path))
    for value in list(model.graph.input) + list(model.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_param")
        dim.dim_value = 1
    model = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for value in [*model.graph.value_info, *model.graph.input, *model.graph.output]:
        shapes[value.name] = [d.dim_value for d in value.type.tensor_type.shape.dim]
    for tensor in model.graph.initializer:
        shapes[tensor.name] = list(tensor.dims)
    counts: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type == "Conv":
            weight = shapes[node.input[1]]  # [Cout, Cin/groups, k...]
            output = shapes[node.output[0]]  # [1, Cout, spatial...]
            macs = int(np.prod(output)) * int(np.prod(weight[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a, b = shapes[node.input[0]], shapes[node.input[1]]
            transposed = any(a.name == "transB" and a.i for a in node.attribute)
            inner = b[-1] if transposed else b[-2]
            outer = b[-2] if transposed else b[-1]
            macs = int(np.prod(a[:-1])) * inner * outer
        else:
            continue
        counts[node.op_type] = counts.get(node.op_type, 0) + macs
    return counts


def single_core_gflops(size: int = 1024, repeats: int = 20) -> float:
    """Best float32 matmul GFLOP/s (2 flops per multiply-add) with one BLAS thread."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def patch_latency(onnx_path: Path, card, batch: int, runs: int) -> float:
    """Median seconds per patch of onnxruntime (1 thread) on random patches of `batch`."""
    tagger = MusicnnTagger(onnx_path, card, threads=1)
    patches = np.random.default_rng(1).random((batch, PATCH_FRAMES, N_MELS), np.float32) * 3
    for _ in range(5):
        tagger.run(patches)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        tagger.run(patches)
        times.append(time.perf_counter() - started)
    return statistics.median(times) / batch


def time_split(onnx_path: Path, card, track: Path, batch_size: int) -> dict[str, float]:
    """Seconds for one track in one thread: decode alone, front end (decode + mel), inference."""
    started = time.perf_counter()
    for _ in decode_mono(track, SAMPLE_RATE):
        pass
    decode_s = time.perf_counter() - started
    started = time.perf_counter()
    batches = list(iter_patch_batches(track, batch_size))
    frontend_s = time.perf_counter() - started
    tagger = MusicnnTagger(onnx_path, card, threads=1)
    tagger.run(batches[0])
    started = time.perf_counter()
    for patches in batches:
        tagger.run(patches)
    inference_s = time.perf_counter() - started
    return {
        "decode_s": decode_s,
        "frontend_s": frontend_s,
        "inference_s": inference_s,
        "patches": sum(len(batch) for batch in batches),
    }


def op_profile(onnx_path: Path, work: Path, runs: int = 20) -> dict[str, float]:
    """Milliseconds per patch by operator type (onnxruntime's profiler, 1 thread, batch 1)."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(work / f"profile-{onnx_path.stem}")
    session = onnxruntime.InferenceSession(str(onnx_path), options)
    patch = np.random.default_rng(1).random((1, PATCH_FRAMES, N_MELS), np.float32) * 3
    for _ in range(runs):
        session.run(None, {session.get_inputs()[0].name: patch})
    events = json.loads(Path(session.end_profiling()).read_text())
    by_op: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"]["op_name"]
            by_op[op] = by_op.get(op, 0.0) + event["dur"] / 1000 / runs
    return dict(sorted(by_op.items(), key=lambda item: -item[1]))


# --- the run ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--music", choices=("real", "synthetic"), default="real")
    parser.add_argument("--tracks", type=int, help="tracks timed per layout (default: all once)")
    parser.add_argument("--synthetic", type=int, default=3, help="synthetic songs made")
    parser.add_argument(
        "--layouts", default="1x1,2x1,1x2", help="pool layouts WORKERSxTHREADS, comma-separated"
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="the MSD_musicnn checkpoint's .index (default: the installed musicnn wheel's)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help="[musicnn] batch_size (default: the plugin's)",
    )
    parser.add_argument(
        "--precisions",
        default="fp32,int8",
        type=lambda value: value.split(","),
        help="[musicnn] precisions measured side by side, comma-separated (fp32 first)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="soundspan-musicnn-bench-"))
    try:
        if args.music == "real":
            print("fetching Debian's soundtracks ...", file=sys.stderr)
            music = debian_music()
            tracks = {track.path: track.seconds for track in music}
            albums = {track.path: track.album for track in music}
        else:
            print("making 4-minute MP3 tracks ...", file=sys.stderr)
            made = make_tracks(work / "tracks", args.synthetic)
            tracks = dict.fromkeys(made, TRACK_SECONDS)
            albums = None  # made tracks have no albums: no retrieval figure
        args.tracks = args.tracks or len(tracks)
        print("converting the MSD weights to ONNX ...", file=sys.stderr)
        started = time.monotonic()
        onnx_path, card = ensure_onnx(cache_dir=work / "models", index_path=args.checkpoint)
        convert_s = time.monotonic() - started

        models = {"fp32": onnx_path}
        quantize_s = None
        if "int8" in args.precisions:
            print("quantizing to int8 (calibration clips, then the check) ...", file=sys.stderr)
            started = time.monotonic()
            models["int8"], check = ensure_int8(onnx_path, card)
            quantize_s = time.monotonic() - started
            print(f"  check on the calibration clips: {check}", file=sys.stderr)
        models = {precision: models[precision] for precision in args.precisions}

        print("single-core measurements ...", file=sys.stderr)
        macs = multiply_adds_per_patch(onnx_path)
        gflops = single_core_gflops()
        split_track = list(tracks)[1 % len(tracks)]
        single = {
            precision: {
                "latency_1": patch_latency(path, card, batch=1, runs=200),
                "latency_16": patch_latency(path, card, batch=16, runs=30),
                "split": time_split(path, card, split_track, args.batch_size),
                "ops": op_profile(path, work),
            }
            for precision, path in models.items()
        }

        layouts = []
        for layout in args.layouts.split(","):
            workers, threads = (int(part) for part in layout.split("x"))
            for precision, path in models.items():
                print(f"pool {workers}x{threads}, {precision} ...", file=sys.stderr)
                run = asyncio.run(
                    pool_throughput(
                        path, card, tracks, args.tracks, workers, threads, args.batch_size
                    )
                )
                layouts.append({**run, "precision": precision})
        report(args, tracks, convert_s, quantize_s, macs, gflops, single, layouts, card, albums)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def report(args, tracks, convert_s, quantize_s, macs, gflops, single, layouts, card, albums):
    def row(name: str, value: object) -> None:
        print(f"  {name:<52} {value}")

    total_macs = sum(macs.values())
    floor_s = 2 * total_macs / (gflops * 1e9)
    print("\n== soundspan MusiCNN benchmark ==")
    print(
        f"  {sys.executable} bench/musicnn.py --music {args.music} --tracks {args.tracks} "
        f"--layouts {args.layouts} --precisions {','.join(args.precisions)} "
        f"--batch-size {args.batch_size}"
    )
    row("machine", f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    row("onnxruntime / numpy", f"{onnxruntime.__version__} / {np.__version__}")
    minutes = sum(tracks.values()) / 60
    row("tracks", f"{len(tracks)} files, {minutes:.1f} minutes of audio ({args.music})")
    row("ONNX conversion (once, cached)", f"{convert_s:.1f} s")
    if quantize_s is not None:
        row("int8 quantization + check (once, cached)", f"{quantize_s:.1f} s")
    row(
        "multiply-adds per patch (Conv / Gemm+MatMul)",
        f"{total_macs / 1e9:.3f} G ({' / '.join(f'{k} {v / 1e9:.3f} G' for k, v in macs.items())})"
        f" = {2 * total_macs / 1e9:.2f} GFLOP",
    )
    row("single-core float32 matmul", f"{gflops:.1f} GFLOP/s")
    row("floor per patch at that rate (float32)", f"{1000 * floor_s:.1f} ms")
    for precision, figures in single.items():
        latency_1, latency_16, split = figures["latency_1"], figures["latency_16"], figures["split"]
        print(f"{precision}, one process, 1 thread:")
        row(
            "per patch, batch 1 / batch 16 (median)",
            f"{1000 * latency_1:.1f} / {1000 * latency_16:.1f} ms",
        )
        total = split["frontend_s"] + split["inference_s"]
        row(
            f"one track, batch {args.batch_size} ({split['patches']} patches)",
            f"{total:.2f} s: decode {split['decode_s']:.2f} / mel "
            f"{split['frontend_s'] - split['decode_s']:.2f} / inference "
            f"{split['inference_s']:.2f} s (front end {100 * split['frontend_s'] / total:.0f} %)",
        )
        ops = figures["ops"]
        shown = [f"{op} {ms:.1f}" for op, ms in ops.items() if ms >= 0.05 * max(ops.values())]
        row("inference per patch by op (ms, batch 1)", ", ".join(shown))
    for layout in layouts:
        print(f"pool {layout['workers']}x{layout['threads']}, {layout['precision']}:")
        row(
            "tracks / audio / seconds",
            f"{layout['tracks']} / {layout['audio_minutes']:.1f} min / {layout['seconds']:.1f} s",
        )
        row("four-minute tracks/min", f"{layout['tracks_per_min']:.1f}")
        row("worker start + model load (warm_up)", f"{layout['warm_up_s']:.1f} s")
        row("peak RSS per worker (MiB)", ", ".join(f"{m:.0f}" for m in layout["peak_rss_mib"]))
    report_quality(layouts, card, albums, row)


def report_quality(layouts, card, albums, row) -> None:
    """Each precision against fp32 on the first layout's results: tags, top 5, retrieval."""
    first: dict[str, dict] = {}
    for run in layouts:
        first.setdefault(run["precision"], run["results"])
    reference = first["fp32"]
    paths = list(reference)
    for precision, results in first.items():
        print(f"quality, {precision} against fp32 ({len(paths)} tracks):")
        diffs, same_top, cosines = [], 0, []
        for path in paths:
            expected = np.array(reference[path].tag_probabilities)
            actual = np.array(results[path].tag_probabilities)
            diffs.append(float(np.abs(expected - actual).max()))
            same_top += top_tags(expected, card) == top_tags(actual, card)
            a, b = np.array(reference[path].embedding), np.array(results[path].embedding)
            cosines.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
        within = sum(diff <= MAX_TAG_DIFF for diff in diffs)
        row(
            "max |diff| of the 50 tags: worst / median track",
            f"{max(diffs):.4f} / {statistics.median(diffs):.4f}"
            f" ({within}/{len(diffs)} within {MAX_TAG_DIFF})",
        )
        row(
            "top-5 identical (same tags, same order)",
            f"{same_top}/{len(paths)} = {100 * same_top / len(paths):.0f} %",
        )
        row(
            "embedding cosine to fp32: worst / median",
            f"{min(cosines):.5f} / {statistics.median(cosines):.5f}",
        )
        if albums is not None:
            embeddings = np.array([results[path].embedding for path in paths])
            retrieval = same_album_at_k(embeddings, [albums[path] for path in paths], k=5)
            row("5 nearest neighbours from the same album (mean)", f"{retrieval:.3f}")


def top_tags(probabilities: np.ndarray, card, count: int = 5) -> list[str]:
    return [card.tags[i] for i in np.argsort(-probabilities, kind="stable")[:count]]


if __name__ == "__main__":
    main()
