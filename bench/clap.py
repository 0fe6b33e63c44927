"""CLAP benchmark (issue 16): the CPU audio worker in torch fp32, ONNX fp32 and ONNX int8, side
by side in one run, on real encoded music (bench/real_music.py: Debian's soundtracks, Ogg Vorbis).

No trained weights can be downloaded here. Speed and memory are measured on a model with the
REAL shapes of `laion/larger_clap_music` and RANDOM weights (HTSAT-base audio tower: patch width
128, depths [2, 2, 12, 2], heads [4, 8, 16, 32], window 8, 64 mel bins, unfused; projection 512;
bench/random_clap.py, htsat_base_roberta_config): random weights cost the same arithmetic and
memory as trained ones, but their embeddings mean nothing, so never read its figures as a
trained model's. Agreement is measured twice: on that model (pool results, each precision
against torch) and on the tests' small model (bench/random_clap.py, save_tiny_clap), window by
window.

Each precision runs as the plugin runs it: the host exports the tower once (precision.choose_tower,
cached under a temp dir, int8 checked on the probe clips), then a ModelPool of `workers` x
`threads` processes loads it (worker.load_audio_tower: torch for "torch", onnxruntime alone for
fp32 and int8) and embeds the tracks (worker.embed_file: decode at 48 kHz, `max_windows`
10-s windows, `--batch-size` windows per inference: [clap] batch_size by default). Reported per
precision: tracks/min of the pool, worker start + load, peak RSS of each worker (psutil, every
0.1 s), and cosines to torch's track embeddings.

Run from the repository root (about 10 minutes on 2 cores with the defaults):

    .venv/bin/python bench/clap.py [--tracks 8] [--workers 2] [--threads 1] [--max-windows 12]
                                   [--batch-size 1]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from common import ChildMemory, remove_work
from random_clap import htsat_base_roberta_config, save_tiny_clap
from real_music import RealTrack, debian_music
from transformers import ClapModel

from soundspan_plugins.clap.embedding import embed_track, embed_windows
from soundspan_plugins.clap.inference import OnnxAudioTower
from soundspan_plugins.clap.laion_checkpoint import UNTRAINED_MARKER, laion_feature_extractor
from soundspan_plugins.clap.loading import load_clap
from soundspan_plugins.clap.precision import choose_tower
from soundspan_plugins.clap.settings import ClapSettings
from soundspan_plugins.clap.windows import SAMPLE_RATE, select_windows
from soundspan_plugins.clap.worker import ModelSource, embed_file, load_audio_tower
from soundspan_plugins.shared.pool import ModelPool
from soundspan_plugins.shared.track_audio import TrackAudio

PRECISIONS = ("torch", "fp32", "int8")


def save_random_model(directory: Path) -> int:
    """Save a random CLAP of the real sizes; returns its audio tower's parameter count."""
    torch.manual_seed(0)
    config = htsat_base_roberta_config()
    setattr(config, UNTRAINED_MARKER, True)
    model = ClapModel(config).eval()
    model.save_pretrained(directory)
    laion_feature_extractor(num_mel_bins=64, fusion=False).save_pretrained(directory)
    return sum(p.numel() for n, p in model.named_parameters() if n.startswith("audio"))


def pick_tracks(count: int) -> list[RealTrack]:
    """`count` tracks spread evenly over the albums' listing (lengths from 30 s to 3 min)."""
    tracks = debian_music()
    step = max(1, len(tracks) // count)
    return tracks[::step][:count]


async def run_pool(
    source: ModelSource, precision: str, cache: Path, tracks: list[RealTrack], args
) -> dict:
    """One precision's pool: load the tower in every worker, then embed all tracks at once."""
    onnx, detail = None, None
    if precision != "torch":
        choice = choose_tower(source, cache, precision, "cpu")
        onnx, detail = choice.onnx, choice.detail
    memory = ChildMemory()
    memory.start()
    load_args = (source, onnx, "cpu", args.threads)
    pool = ModelPool("clap-bench", args.workers, load_audio_tower, load_args, args.threads)
    embeddings: dict[Path, np.ndarray] = {}
    windows = []
    try:
        started = time.monotonic()
        await pool.warm_up()
        load_s = time.monotonic() - started

        async def embed(track: RealTrack) -> None:
            result = await pool.run(embed_file, str(track.path), args.max_windows, args.batch_size)
            embeddings[track.path] = np.asarray(result.embedding)
            windows.append(result.windows)

        started = time.monotonic()
        await asyncio.gather(*(embed(track) for track in tracks))
        wall_s = time.monotonic() - started
    finally:
        await pool.close()
        memory.stopping.set()
        memory.join()
    return {
        "precision": precision,
        "detail": detail,
        "wall_s": wall_s,
        "load_s": load_s,
        "windows": windows,
        "peaks_mib": sorted(peak / 2**20 for peak in memory.peaks.values()),
        "embeddings": embeddings,
    }


def small_model_agreement(directory: Path, cache: Path, tracks: list[RealTrack], max_windows: int):
    """Per precision, the lowest window cosine and track cosine to torch on the tests' model."""
    source = ModelSource(
        str(save_tiny_clap(directory, projection_dim=512)), None, False, None, False
    )
    clap = load_clap(source.model, towers=("audio",))
    towers = {
        precision: OnnxAudioTower(choose_tower(source, cache, precision, "cpu").onnx)
        for precision in ("fp32", "int8")
    }
    window_cosines: dict[str, list[float]] = {precision: [] for precision in towers}
    track_cosines: dict[str, list[float]] = {precision: [] for precision in towers}
    for track in tracks:
        windows = select_windows(TrackAudio(track.path, SAMPLE_RATE), max_windows)
        reference = embed_windows(clap, windows)
        whole = embed_track(clap, TrackAudio(track.path, SAMPLE_RATE), max_windows=max_windows)
        for precision, tower in towers.items():
            ours = tower.embed_windows(windows)
            window_cosines[precision].extend(np.sum(reference * ours, axis=1).tolist())
            track_cosines[precision].append(float(whole @ tower.embed_selected(windows)))
    return window_cosines, track_cosines


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=8, help="real tracks embedded per precision")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="threads per worker")
    parser.add_argument("--max-windows", type=int, default=12, help="[clap] max_windows")
    parser.add_argument(
        "--batch-size", type=int, default=ClapSettings().batch_size, help="[clap] batch_size"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="soundspan-clap-bench-"))
    tracks = pick_tracks(args.tracks)
    try:
        print(
            "saving a random CLAP audio tower with larger_clap_music's sizes ...", file=sys.stderr
        )
        parameters = save_random_model(work / "model")
        source = ModelSource(str(work / "model"), None, False, None, False)
        results = []
        for precision in PRECISIONS:
            print(f"{precision}: {args.workers} x {args.threads} ...", file=sys.stderr)
            results.append(asyncio.run(run_pool(source, precision, work / "onnx", tracks, args)))
        onnx_mib = {
            path.name: path.stat().st_size / 2**20 for path in (work / "onnx").glob("*.onnx")
        }
        print("agreement on the tests' small model ...", file=sys.stderr)
        window_cosines, track_cosines = small_model_agreement(
            work / "tiny", work / "tiny-onnx", tracks, args.max_windows
        )
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            remove_work(work)

    seconds = sum(track.seconds for track in tracks)
    print("\n== soundspan CLAP audio worker: torch vs ONNX fp32 vs ONNX int8 (CPU) ==")
    print(
        f"  {sys.executable} bench/clap.py --tracks {args.tracks} --workers {args.workers}"
        f" --threads {args.threads} --max-windows {args.max_windows} --batch-size {args.batch_size}"
    )
    print(
        f"  RANDOM weights, larger_clap_music's sizes: audio tower {parameters / 1e6:.1f} M"
        f" parameters; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}"
    )
    print(f"  ONNX files: {', '.join(f'{name} {mib:.0f} MiB' for name, mib in onnx_mib.items())}")
    print(
        f"  {len(tracks)} real tracks (Debian soundtracks, Ogg Vorbis), {seconds / 60:.1f} min"
        f" of music"
    )
    torch_embeddings = results[0]["embeddings"]
    for result in results:
        cosines = [
            float(result["embeddings"][path] @ torch_embeddings[path]) for path in torch_embeddings
        ]
        print(f"{result['precision']}:" + (f" ({result['detail']})" if result["detail"] else ""))
        print(
            f"  pool throughput                 "
            f"{60 * len(tracks) / result['wall_s']:.1f} tracks/min"
            f" ({sum(result['windows'])} windows, {result['wall_s']:.1f} s)"
        )
        print(f"  worker start + tower load       {result['load_s']:.1f} s")
        print(
            f"  peak RSS per worker             "
            f"{', '.join(f'{mib:.0f}' for mib in result['peaks_mib'])} MiB"
        )
        print(
            f"  track cosine to torch (random)  min {min(cosines):.5f}, mean {np.mean(cosines):.5f}"
        )
    for precision in window_cosines:
        print(
            f"tests' small model, {precision} vs torch on the same real windows:"
            f" window cosine min {min(window_cosines[precision]):.5f}"
            f" ({len(window_cosines[precision])} windows),"
            f" track cosine min {min(track_cosines[precision]):.5f}"
        )


if __name__ == "__main__":
    main()
