"""MusiCNN benchmark (issue 8): tracks per minute and memory per worker, as the product runs it.

Uses the plugin's own pieces, the way the host's `[musicnn]` plugin does:
`soundspan_plugins.musicnn.onnx_export.ensure_onnx` converts the musicnn wheel's MSD weights to
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
int8 one `soundspan_plugins.musicnn.precision` makes, as `[musicnn] precision` picks them):
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
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402
from common import ChildMemory  # noqa: E402
from musicnn_profile import (  # noqa: E402
    multiply_adds_per_patch,
    op_profile,
    patch_latency,
    single_core_gflops,
    time_split,
)
from real_music import debian_music, same_album_at_k  # noqa: E402
from synthetic_music import TRACK_SECONDS, make_tracks  # noqa: E402

from soundspan_plugins.musicnn import MusicnnSettings  # noqa: E402
from soundspan_plugins.musicnn.onnx_export import ensure_onnx  # noqa: E402
from soundspan_plugins.musicnn.precision import MAX_TAG_DIFF, ensure_int8  # noqa: E402
from soundspan_plugins.musicnn.worker import analyze_file, load_tagger  # noqa: E402
from soundspan_plugins.shared.pool import ModelPool  # noqa: E402

DEFAULT_BATCH_SIZE = MusicnnSettings().batch_size  # the plugin's default


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
