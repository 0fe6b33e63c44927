"""MusiCNN benchmark (issue 8): tracks per minute and memory per worker, as the product runs it.

Uses the plugin's own pieces, the way the host's `[musicnn]` plugin does:
`soundspan_plugins.musicnn.model_cache.ensure_onnx` converts the musicnn wheel's MSD weights to
ONNX (into a temp dir), and a `soundspan_plugins.shared.pool.ModelPool` of N spawned worker
processes, each loading `worker.load_tagger` once, runs `worker.analyze_file` per track (decode
with PyAV + soxr, log-mel front end, onnxruntime on CPU, batch 16 as the plugin's default).

Input: a few distinct 4-minute 44.1 kHz stereo MP3 files (192 kb/s) made with PyAV in a temp
dir: one is the real clip tests/fixtures/musicnn/anttis_1918.mp3 looped to 4 minutes, the
others synthetic music (chord progressions with harmonics, kick/snare/hi-hat, some noise, a
different key, tempo and seed each).

Reported:
  * tracks/min of 4-min tracks for each pool layout (default: workers=2 threads=1 and
    workers=1 threads=2), timed over --tracks tracks after every worker has loaded its model;
  * peak RSS of each worker process (psutil, sampled every 0.1 s over the pool's children);
  * single-patch latency: onnxruntime, 1 thread, batch 1, median over many runs; beside it the
    physical floor: multiply-adds of one patch counted from the ONNX graph (Conv and
    Gemm/MatMul shapes after shape inference with batch 1) and this machine's measured
    single-core float32 GFLOP/s (a numpy matmul with one BLAS thread);
  * where a track's time goes, in one process with 1 thread: decode alone, decode + mel
    (the whole front end), and inference over the same patches at batch 16.

Run from the repository root (one run takes about 3 to 5 minutes on 2 cores):

    .venv/bin/python bench/musicnn.py [--tracks 16] [--layouts 2x1,1x2] [--batch-size N]
                                      [--keep]
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

from soundspan_plugins.musicnn import MusicnnSettings  # noqa: E402
from soundspan_plugins.musicnn.frontend import (  # noqa: E402
    N_MELS,
    PATCH_FRAMES,
    SAMPLE_RATE,
    iter_patch_batches,
)
from soundspan_plugins.musicnn.inference import MusicnnTagger  # noqa: E402
from soundspan_plugins.musicnn.model_cache import ensure_onnx  # noqa: E402
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
    tracks: list[Path],
    count: int,
    workers: int,
    threads: int,
    batch_size: int,
) -> dict:
    """Analyze `count` tracks (cycling over `tracks`) with a ModelPool; tracks/min, memory."""
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
        work = [str(tracks[index % len(tracks)]) for index in range(count)]
        started = time.monotonic()
        results = await asyncio.gather(*(pool.run(analyze_file, path, batch_size) for path in work))
        elapsed = time.monotonic() - started
    finally:
        await pool.close()
        memory.stopping.set()
        memory.join()
    patches = sum(result.patches for result in results)
    return {
        "workers": workers,
        "threads": threads,
        "tracks": count,
        "seconds": elapsed,
        "tracks_per_min": 60.0 * count / elapsed,
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


# --- the run ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=16, help="tracks timed per layout")
    parser.add_argument("--synthetic", type=int, default=3, help="synthetic songs made")
    parser.add_argument(
        "--layouts", default="2x1,1x2", help="pool layouts WORKERSxTHREADS, comma-separated"
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
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="soundspan-musicnn-bench-"))
    try:
        print("making 4-minute MP3 tracks ...", file=sys.stderr)
        tracks = make_tracks(work / "tracks", args.synthetic)
        print("converting the MSD weights to ONNX ...", file=sys.stderr)
        started = time.monotonic()
        onnx_path, card = ensure_onnx(cache_dir=work / "models", index_path=args.checkpoint)
        convert_s = time.monotonic() - started

        print("single-core measurements ...", file=sys.stderr)
        macs = multiply_adds_per_patch(onnx_path)
        gflops = single_core_gflops()
        latency_1 = patch_latency(onnx_path, card, batch=1, runs=200)
        latency_16 = patch_latency(onnx_path, card, batch=16, runs=30)
        split = time_split(onnx_path, card, tracks[1 % len(tracks)], args.batch_size)

        layouts = []
        for layout in args.layouts.split(","):
            workers, threads = (int(part) for part in layout.split("x"))
            print(f"pool {workers} workers x {threads} threads ...", file=sys.stderr)
            layouts.append(
                asyncio.run(
                    pool_throughput(
                        onnx_path, card, tracks, args.tracks, workers, threads, args.batch_size
                    )
                )
            )
        report(args, tracks, convert_s, macs, gflops, latency_1, latency_16, split, layouts)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def report(args, tracks, convert_s, macs, gflops, latency_1, latency_16, split, layouts) -> None:
    def row(name: str, value: object) -> None:
        print(f"  {name:<52} {value}")

    total_macs = sum(macs.values())
    floor_s = 2 * total_macs / (gflops * 1e9)
    print("\n== soundspan MusiCNN benchmark ==")
    print(
        f"  {sys.executable} bench/musicnn.py --tracks {args.tracks} --layouts {args.layouts} "
        f"--batch-size {args.batch_size}"
    )
    row("machine", f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    row("onnxruntime / numpy", f"{onnxruntime.__version__} / {np.__version__}")
    row("tracks", ", ".join(f"{p.name} ({p.stat().st_size / 2**20:.1f} MiB)" for p in tracks))
    row("ONNX conversion (once, cached)", f"{convert_s:.1f} s")
    row(
        "multiply-adds per patch (Conv / Gemm+MatMul)",
        f"{total_macs / 1e9:.3f} G ({' / '.join(f'{k} {v / 1e9:.3f} G' for k, v in macs.items())})"
        f" = {2 * total_macs / 1e9:.2f} GFLOP",
    )
    row("single-core float32 matmul", f"{gflops:.1f} GFLOP/s")
    row("floor per patch at that rate", f"{1000 * floor_s:.1f} ms")
    row("onnxruntime 1 thread, batch 1: per patch (median)", f"{1000 * latency_1:.1f} ms")
    row("onnxruntime 1 thread, batch 16: per patch (median)", f"{1000 * latency_16:.1f} ms")
    row("  achieved, batch 1 / batch 16", f"{2 * total_macs / latency_1 / 1e9:.1f} / "
        f"{2 * total_macs / latency_16 / 1e9:.1f} GFLOP/s")  # fmt: skip
    total = split["frontend_s"] + split["inference_s"]
    row(
        f"one track, 1 thread, batch {args.batch_size} ({split['patches']} patches)",
        f"{total:.2f} s",
    )
    row(
        "  decode (PyAV + soxr) / mel / inference",
        f"{split['decode_s']:.2f} / {split['frontend_s'] - split['decode_s']:.2f} / "
        f"{split['inference_s']:.2f} s",
    )
    row(
        "  front end (decode + mel) share",
        f"{100 * split['frontend_s'] / total:.0f} % "
        f"(inference {100 * split['inference_s'] / total:.0f} %)",
    )
    for layout in layouts:
        print(f"pool: {layout['workers']} workers x {layout['threads']} threads:")
        row("tracks / seconds", f"{layout['tracks']} / {layout['seconds']:.1f} s")
        row("tracks/min (4-min tracks)", f"{layout['tracks_per_min']:.1f}")
        row("worker start + model load (warm_up)", f"{layout['warm_up_s']:.1f} s")
        after_load = layout["rss_after_load_mib"]
        row("RSS per worker after load (MiB)", ", ".join(f"{m:.0f}" for m in after_load))
        row("peak RSS per worker (MiB)", ", ".join(f"{m:.0f}" for m in layout["peak_rss_mib"]))


if __name__ == "__main__":
    main()
