"""CLAP benchmark (issue 9): memory of one CLAP audio worker and its seconds per 4-min track, CPU.

No trained weights can be downloaded here, so the model has the REAL shapes of
`laion/larger_clap_music` with random weights: a ClapConfig with HTSAT-base as the audio tower
(patch width 128, depths [2, 2, 12, 2], heads [4, 8, 16, 32], window 8, 64 mel bins, 256 x 256
spectrogram, unfused), RoBERTa-base as the text tower (50265 tokens, 768 wide, 12 layers, 12
heads, 3072 inner, 514 positions) and projection_dim 512. It is saved with `save_pretrained`
(plus the LAION feature extractor) into a temp dir, with the untrained marker set, and loaded
the way the `[clap]` plugin does: a `ModelPool` worker process runs
`soundspan_plugins.clap.worker.load_audio_tower` (audio tower only) and then `embed_file` per
track (PyAV decode at 48 kHz, `max_windows` 10-s windows, batch 4: the plugin's defaults).
Random weights cost the same arithmetic and memory as trained ones.

Input: two distinct 4-minute 44.1 kHz stereo MP3 files (chords, drums and noise, made with PyAV).
Reported per pool layout: model load time, seconds per track, tracks/min, peak RSS of the
worker process (psutil, sampled every 0.1 s), and the RSS right after the model was loaded.

Run from the repository root (a few minutes on 2 cores):

    .venv/bin/python bench/clap.py [--tracks 2] [--layouts 1x1,1x2,2x1] [--max-windows 32,12]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
from common import ChildMemory
from transformers import ClapModel

from soundspan_plugins.clap.embedding import embed_text
from soundspan_plugins.clap.laion_checkpoint import UNTRAINED_MARKER, laion_feature_extractor
from soundspan_plugins.clap.loading import load_clap
from soundspan_plugins.clap.worker import ModelSource, embed_file, load_audio_tower
from soundspan_plugins.shared.pool import ModelPool
from tests.clap_models import htsat_base_roberta_config, save_tokenizer

RATE = 44100
TRACK_SECONDS = 240.0
BATCH_SIZE = 4  # [clap] batch_size default


def save_random_model(directory: Path) -> dict[str, int]:
    """Save a randomly initialised CLAP of the real sizes; returns parameter counts per tower."""
    torch.manual_seed(0)
    config = htsat_base_roberta_config()
    setattr(config, UNTRAINED_MARKER, True)
    model = ClapModel(config).eval()
    counts = {
        "audio": sum(p.numel() for n, p in model.named_parameters() if n.startswith("audio")),
        "text": sum(p.numel() for n, p in model.named_parameters() if n.startswith("text")),
    }
    model.save_pretrained(directory)
    laion_feature_extractor(num_mel_bins=64, fusion=False).save_pretrained(directory)
    return counts


QUERIES = [
    "rainy night jazz piano",
    "aggressive distorted guitar riff",
    "calm ambient drone with birds",
    "upbeat eighties synth pop with female vocals",
    "slow sad cello",
]


def text_latency(model_dir: Path, device: str, rounds: int = 20) -> list[float]:
    """Seconds per text query through the text tower as the host holds it (1 thread)."""
    save_tokenizer(model_dir, QUERIES, vocab_size=400)
    clap = load_clap(model_dir, towers=("text",), threads=1, device=device)
    embed_text(clap, QUERIES[:1])  # warm up
    latencies = []
    for _ in range(rounds):
        for query in QUERIES:
            started = time.perf_counter()
            embed_text(clap, [query])
            latencies.append(time.perf_counter() - started)
    return latencies


def write_song(path: Path, seed: int) -> None:
    """4 minutes of chords, kick and noise as a 44.1 kHz stereo 192 kb/s MP3."""
    rng = np.random.default_rng(seed)
    n = int(TRACK_SECONDS * RATE)
    t = np.arange(n) / RATE
    beat = 60.0 / (90 + 20 * seed)
    root = 110.0 * 2 ** (rng.integers(0, 12) / 12)
    chord = np.take([0, 5, 7, 3], (t // (4 * beat)).astype(int) % 4)
    signal = np.zeros(n)
    for interval in (0, 4, 7):
        phase = 2 * np.pi * np.cumsum(root * 2 ** ((chord + interval) / 12)) / RATE
        signal += 0.1 * (np.sin(phase) + 0.3 * np.sin(2 * phase))
    in_beat = np.mod(t, beat)
    signal += 0.4 * np.sin(2 * np.pi * 60 * in_beat) * np.exp(-in_beat * 12)
    signal += 0.05 * rng.standard_normal(n) * np.exp(-np.mod(t, beat / 2) * 40)
    stereo = np.stack([signal, np.roll(signal, 100)]).astype(np.float32)
    stereo *= 0.9 / np.abs(stereo).max()
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mp3", rate=RATE)
        stream.layout = "stereo"
        stream.bit_rate = 192_000
        for start in range(0, n, 1152 * 64):
            block = np.ascontiguousarray(stereo[:, start : start + 1152 * 64])
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
            frame.sample_rate = RATE
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def plugin_device(model_dir: Path) -> str:
    """The device the [clap] plugin picks at start-up with device = auto (it logs the line
    `CLAP: CUDA available: ...` that the GPU guide asks users to look for)."""
    from soundspan_plugins.clap import ClapSettings, _load_text_tower

    runtime = _load_text_tower(ClapSettings(model=str(model_dir), device="auto"))
    return f"{runtime.device} (reason: {runtime.reason})"


def cpu_parity(model_dir: Path, track: Path) -> float:
    """How close the CUDA worker's fp16 embedding of a track is to the CPU worker's fp32 one."""
    source = ModelSource(str(model_dir), None, False, None)
    embeddings = [
        np.asarray(
            embed_file(load_audio_tower(source, device, 4), str(track), 12, BATCH_SIZE).embedding
        )
        for device in ("cpu", "cuda")
    ]
    return float(embeddings[0] @ embeddings[1])


async def run_pool(
    model_dir: Path, tracks: list[Path], workers: int, threads: int, max_windows: int, device: str
) -> dict:
    """`workers` processes of `threads` threads: load the audio tower, embed the tracks at once."""
    memory = ChildMemory()
    memory.start()
    source = ModelSource(str(model_dir), None, False, None)
    pool = ModelPool("clap-bench", workers, load_audio_tower, (source, device, threads), threads)
    try:
        started = time.monotonic()
        await pool.warm_up()
        load_s = time.monotonic() - started
        after_load = max(memory.peaks.values(), default=0)
        seconds = []
        windows = []

        async def embed(track: Path) -> None:
            started = time.monotonic()
            result = await pool.run(embed_file, str(track), max_windows, BATCH_SIZE)
            seconds.append(time.monotonic() - started)
            windows.append(result.windows)

        started = time.monotonic()
        await asyncio.gather(*(embed(track) for track in tracks))
        wall_s = time.monotonic() - started
    finally:
        await pool.close()
        memory.stopping.set()
        memory.join()
    return {
        "workers": workers,
        "threads": threads,
        "max_windows": max_windows,
        "wall_s": wall_s,
        "load_s": load_s,
        "seconds": seconds,
        "windows": windows,
        "after_load_mib": after_load / 2**20,
        "peak_mib": max(memory.peaks.values(), default=0) / 2**20,
    }


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=2, help="4-minute tracks embedded")
    parser.add_argument(
        "--layouts",
        default="1x1,1x2,2x1",
        help="WORKERSxTHREADS layouts, comma-separated; each embeds --tracks tracks at once",
    )
    parser.add_argument(
        "--max-windows", default="32", help="[clap] max_windows values, comma-separated"
    )
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="soundspan-clap-bench-"))
    try:
        print("saving a random CLAP with larger_clap_music's sizes ...", file=sys.stderr)
        counts = save_random_model(work / "model")
        model_mib = sum(f.stat().st_size for f in (work / "model").iterdir()) / 2**20
        tracks = []
        for seed in range(args.tracks):
            tracks.append(work / f"song_{seed}.mp3")
            write_song(tracks[-1], seed)
        results = []
        for max_windows in (int(value) for value in args.max_windows.split(",")):
            for layout in args.layouts.split(","):
                workers, threads = (int(part) for part in layout.split("x"))
                print(f"{workers} x {threads}, max_windows {max_windows} ...", file=sys.stderr)
                results.append(
                    asyncio.run(
                        run_pool(work / "model", tracks, workers, threads, max_windows, args.device)
                    )
                )
        text_latencies = text_latency(work / "model", args.device)
        parity = cpu_parity(work / "model", tracks[0]) if args.device == "cuda" else None
        picked = plugin_device(work / "model")
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    print("\n== soundspan CLAP worker benchmark (random weights, larger_clap_music sizes) ==")
    print(
        f"  {sys.executable} bench/clap.py --tracks {args.tracks} --layouts {args.layouts}"
        f" --max-windows {args.max_windows} --device {args.device}"
    )
    print(f"  parameters: audio {counts['audio'] / 1e6:.1f} M, text {counts['text'] / 1e6:.1f} M")
    print(f"  saved model dir: {model_mib:.0f} MiB; torch {torch.__version__}")
    for result in results:
        per_track = sum(result["seconds"]) / len(result["seconds"])
        print(
            f"{result['workers']} worker(s) x {result['threads']} threads,"
            f" max_windows {result['max_windows']}:"
        )
        print(
            f"  pool throughput                   "
            f"{60 * len(result['seconds']) / result['wall_s']:.1f} tracks/min"
        )
        print(f"  worker start + audio tower load   {result['load_s']:.1f} s")
        print(f"  RSS after load                    {result['after_load_mib']:.0f} MiB")
        print(f"  peak RSS of the worker            {result['peak_mib']:.0f} MiB")
        print(
            f"  seconds per 4-min track           "
            f"{', '.join(f'{s:.1f}' for s in result['seconds'])} (windows {result['windows']})"
        )
        print(f"  tracks/min for one worker         {60 / per_track:.1f}")
    print(f"[clap] device = auto picks: {picked}")
    if parity is not None:
        print(f"cosine of one track's CUDA (fp16) and CPU (fp32) embeddings: {parity:.5f}")
    text_latencies.sort()
    print(
        "text tower in the host, 1 query at a time:"
        f" p50 {1000 * text_latencies[len(text_latencies) // 2]:.1f} ms,"
        f" p90 {1000 * text_latencies[int(len(text_latencies) * 0.9)]:.1f} ms"
    )


if __name__ == "__main__":
    main()
