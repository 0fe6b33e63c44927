"""Rescan benchmark (issue 15): what a restart costs after every file of a library was retagged.

Ingest knows a file by its audio payload (plugins/watcher/identity.py), so a retag (beets,
Picard: new tags, the same audio) must make the host read every changed file again but queue
no analysis and keep every track's id. This bench starts the real host (`python -m
soundspan_host serve`, embedded PostgreSQL) in a temporary folder with only the watcher and the
no-op analyzer (bench/noop_analyzer, installed by entry point, so no model time counts):

1. N tagged MP3 files (44.1 kHz mono, 64 kbit/s, ~1 s) are written into the music dir.
2. First start: the start-up reconcile records them all; the bench waits until every noop job
   is done, then stops the host.
3. Plain restart: nothing changed; the reconcile only compares sizes and mtimes.
4. Every file is retagged with mutagen (new title, artist, album and comment; a ~100 KB cover
   on every tenth), keeping its audio bytes (checked), then the host is started again.

Each start is timed from launching the process until GET /api/library/scan says the start-up
reconcile is over (polled every 0.1 s). Reported per start: those seconds, the files the
reconcile read, analysis jobs the start queued (rows new or changed in any way since just
before it), new contents, tracks whose id or content changed, and the host's CPU seconds (the
start-up included) and its PostgreSQL's, and the host's peak RSS up to then.

How the files are made: encoding 10,000 clips one by one takes minutes, so one LAME encoder
(bit reservoir off, so every MP3 frame stands alone) encodes a pool of frames, one tone each,
and each file is a different sequence of those frames: its first two spell its index in the
pool's base, so no two files share a payload (checked). They are real MP3 streams that
mutagen and PyAV read like any other. At the default 1 s the identity hashes a file's whole
payload; from `--seconds 35` (past its 256 KB head) it also seeks to the tail, as for real tracks.

Run from the repository root:

    .venv/bin/python bench/rescan.py [--files 10000] [--seconds 1.0] [--workers 4] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import sys
import tempfile
import time
import urllib.request
from fractions import Fraction
from pathlib import Path

import asyncpg
import av
import numpy
from common import BenchHost, remove_work
from ingest import bench_settings, ingest_environment, install_noop_plugin, wait_for_jobs
from mutagen.id3 import APIC, COMM, ID3, TALB, TIT2, TPE1, TRCK, PictureType

SAMPLE_RATE = 44100
FRAME_SAMPLES = 1152  # one MPEG-1 Layer III frame
BIT_RATE = 64000
COVER_EVERY = 10  # every tenth retagged file gets a cover image
COVER_SIDE = 320  # pixels of random noise: a JPEG of about 100 KB
SCAN_POLL_SECONDS = 0.1
RECONCILE_TIMEOUT_SECONDS = 1800.0


# --- the library -----------------------------------------------------------------------------


def encode_frames(count: int) -> list[bytes]:
    """`count` distinct MP3 frames, each of its own tone, from one LAME encoder with the bit
    reservoir off (a frame then holds all of its own audio data, so frames can be reordered)."""
    encoder = av.CodecContext.create("libmp3lame", "w")
    encoder.sample_rate = SAMPLE_RATE
    encoder.layout = "mono"
    encoder.format = "s16p"
    encoder.bit_rate = BIT_RATE
    encoder.options = {"reservoir": "0"}
    encoder.open()
    times = numpy.arange(FRAME_SAMPLES) / SAMPLE_RATE
    frames: list[bytes] = []
    for index in range(count + 4):  # a few more: the encoder's delay holds the last ones back
        frequency = 110.0 + 7000.0 * index / count
        samples = (12000 * numpy.sin(2 * numpy.pi * frequency * times)).astype(numpy.int16)
        audio = av.AudioFrame.from_ndarray(samples[None, :], format="s16p", layout="mono")
        audio.sample_rate = SAMPLE_RATE
        frames.extend(bytes(packet) for packet in encoder.encode(audio))
    frames.extend(bytes(packet) for packet in encoder.encode(None))
    distinct = list(dict.fromkeys(frames))[:count]
    if len(distinct) < count:
        raise RuntimeError(f"the encoder made only {len(distinct)} distinct frames of {count}")
    return distinct


def payload(index: int, pool: list[bytes], frame_count: int) -> bytes:
    """The index-th file's MP3 frames: the first two spell `index` in base len(pool)."""
    base = len(pool)
    lead = [pool[index % base], pool[index // base % base]]
    rest = [pool[(index + offset) % base] for offset in range(frame_count - 2)]
    return b"".join(lead + rest)


def write_library(music: Path, count: int, seconds: float) -> dict[str, bytes]:
    """Write `count` tagged MP3 files; returns {relative path: digest of its audio bytes}."""
    frame_count = max(round(seconds * SAMPLE_RATE / FRAME_SAMPLES), 2)
    pool = encode_frames(max(math.isqrt(count - 1) + 1, frame_count, 2))
    digests: dict[str, bytes] = {}
    for index in range(count):
        relative = f"artist{index // 1000:02d}/album{index // 10:04d}/track{index:05d}.mp3"
        path = music / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        audio = payload(index, pool, frame_count)
        path.write_bytes(audio)
        tags = ID3()
        tags.add(TIT2(encoding=3, text=f"Tone {index}"))
        tags.add(TPE1(encoding=3, text=f"Bench Artist {index // 1000}"))
        tags.add(TALB(encoding=3, text=f"Bench Album {index // 10}"))
        tags.add(TRCK(encoding=3, text=f"{index % 10 + 1}/10"))
        tags.save(path)
        digests[relative] = hashlib.blake2b(audio, digest_size=16).digest()
    if len(set(digests.values())) != count:
        raise RuntimeError("two files share their audio; the bench needs distinct contents")
    return digests


def cover_image() -> bytes:
    """A JPEG of random noise, about 100 KB (noise does not compress), encoded by PyAV."""
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width = encoder.height = COVER_SIDE
    encoder.pix_fmt = "yuvj420p"
    encoder.time_base = Fraction(1, 1)
    encoder.qscale = 2  # near-best quality: the noise stays, and so does the size
    noise = numpy.random.default_rng(15).integers(0, 256, (COVER_SIDE, COVER_SIDE, 3), "uint8")
    image = av.VideoFrame.from_ndarray(noise, format="rgb24").reformat(format="yuvj420p")
    return b"".join(bytes(packet) for packet in [*encoder.encode(image), *encoder.encode(None)])


def retag_library(music: Path, digests: dict[str, bytes]) -> dict[str, int]:
    """Retag every file as a tagger does (tags rewritten in place, the audio kept), and check
    that each file's audio bytes are still what they were."""
    cover = cover_image()
    covered = 0
    for number, relative in enumerate(sorted(digests)):
        path = music / relative
        tags = ID3(path)
        tags.setall("TIT2", [TIT2(encoding=3, text=f"Retagged tone {number}")])
        tags.setall("TPE1", [TPE1(encoding=3, text=f"Retagged Artist {number % 97}")])
        tags.setall("TALB", [TALB(encoding=3, text=f"Retagged Album {number // 12}")])
        tags.setall("COMM", [COMM(encoding=3, lang="eng", desc="", text="retagged for issue 15")])
        if number % COVER_EVERY == 0:
            tags.setall("APIC", [APIC(3, "image/jpeg", PictureType.COVER_FRONT, "", cover)])
            covered += 1
        tags.save(path)
        audio = path.read_bytes()[ID3(path).size :]
        if hashlib.blake2b(audio, digest_size=16).digest() != digests[relative]:
            raise RuntimeError(f"{relative}: retagging changed its audio bytes")
    return {"files": len(digests), "covers": covered, "cover_bytes": len(cover)}


# --- measuring --------------------------------------------------------------------------------


async def snapshot(database_url: str) -> dict:
    """Every track (path -> id, content, title) and analysis job (-> its state and times)."""
    db = await asyncpg.connect(database_url)
    try:
        tracks = await db.fetch("SELECT path, id, content_id, title FROM tracks")
        jobs = await db.fetch(
            "SELECT content_id, analyzer, state, attempts, created_at, finished_at"
            " FROM analysis_jobs"
        )
        contents = await db.fetchval("SELECT count(*) FROM contents")
    finally:
        await db.close()
    return {
        "tracks": {row["path"]: tuple(row)[1:] for row in tracks},
        "jobs": {(row["content_id"], row["analyzer"]): tuple(row) for row in jobs},
        "contents": contents,
    }


def compare(before: dict, after: dict) -> dict[str, int]:
    """What a start changed: jobs new or touched (re-queued, re-run), contents, track ids."""
    jobs_new = sum(key not in before["jobs"] for key in after["jobs"])
    jobs_touched = sum(
        key in before["jobs"] and row != before["jobs"][key] for key, row in after["jobs"].items()
    )
    paths = before["tracks"].keys() & after["tracks"].keys()
    return {
        "jobs_queued": jobs_new + jobs_touched,
        "jobs_new": jobs_new,
        "jobs_touched": jobs_touched,
        "contents_new": after["contents"] - before["contents"],
        "track_ids_changed": sum(before["tracks"][p][0] != after["tracks"][p][0] for p in paths),
        "track_contents_changed": sum(
            before["tracks"][p][1] != after["tracks"][p][1] for p in paths
        ),
        "titles_changed": sum(before["tracks"][p][2] != after["tracks"][p][2] for p in paths),
        "tracks_lost": len(before["tracks"].keys() - after["tracks"].keys()),
    }


def scan_state(host: BenchHost) -> dict:
    with urllib.request.urlopen(host.url("/api/library/scan"), timeout=10) as answer:
        return json.load(answer)


def timed_start(host: BenchHost, label: str) -> dict:
    """Start the host and wait for its start-up reconcile; the seconds, counts and costs."""
    host.log_path = host.work / f"host-{label}.log"
    launched_at = time.time()
    launched = time.monotonic()
    healthz_s = host.start()
    enabled = sorted(plugin["name"] for plugin in host.plugins() if plugin["enabled"])
    if enabled != ["noop", "watcher"]:
        raise RuntimeError(f"expected only the noop and watcher plugins, got {enabled}")
    while True:
        state = scan_state(host)
        if not state["scanning"] and state["last"] is not None:
            break
        if time.monotonic() - launched > RECONCILE_TIMEOUT_SECONDS:
            raise RuntimeError(f"{label}: no reconcile within {RECONCILE_TIMEOUT_SECONDS} s")
        time.sleep(SCAN_POLL_SECONDS)
    reconcile_s = time.monotonic() - launched
    last = state["last"]
    return {
        "launched_at": launched_at,
        "healthz_s": healthz_s,
        "reconcile_s": reconcile_s,
        "files_read": last["appeared"] + last["changed"],
        "counts": last,
        "cpu_s": host.cpu_seconds(),
        "peak_rss": host.memory.peak,
    }


async def analyzed_at(host: BenchHost, expected: int, label: str) -> float:
    """Wait until `expected` noop jobs are done; the last one's finished_at (Unix time)."""
    db = await asyncpg.connect(host.database_url)
    try:
        counts = await wait_for_jobs(db, expected, label, until_done=True)
    finally:
        await db.close()
    if counts["done"] != expected:
        raise RuntimeError(f"{label}: only {counts['done']} of {expected} jobs done")
    return counts["last_finished"]


def run_start(
    host: BenchHost, label: str, before: dict, analyzed: int | None = None
) -> tuple[dict, dict]:
    """One start, timed to the end of its reconcile and compared with `before` (the database
    as the last start left it); with `analyzed`, also waits until that many jobs are done.
    The host is stopped after; returns the results and the database as this start left it."""
    print(f"{label}: starting the host ...", file=sys.stderr)
    try:
        result = timed_start(host, label)
        after = asyncio.run(snapshot(host.database_url))
        result["changes"] = compare(before, after)
        if analyzed is not None:
            finished = asyncio.run(analyzed_at(host, analyzed, label))
            result["analyzed_s"] = finished - result["launched_at"]
            after = asyncio.run(snapshot(host.database_url))
    except BaseException:
        print(f"host log tail:\n{host.tail()}", file=sys.stderr)
        raise
    finally:
        stopped = host.stop()
    result["stopped"] = stopped
    result["problems"] = host.problems()
    return result, after


# --- the run ----------------------------------------------------------------------------------


COLUMNS = {
    "first": "first start (all new)",
    "plain": "plain restart (no change)",
    "retag": "restart after the retag",
}


def print_report(args, settings, runs, retag, retag_s, loads) -> None:
    """The results as a Markdown table, one column per start."""
    print("\n== soundspan rescan benchmark ==")
    print(
        f"  {sys.executable} bench/rescan.py --files {args.files} --seconds {args.seconds}"
        f" --workers {args.workers}"
    )
    print(f"  load average before / after: {loads[0]} / {loads[1]}")
    for name, value in settings.items():
        print(f"  {name}={value}")
    print(
        f"  retag: {retag['files']} files in {retag_s:.1f} s, {retag['covers']} with a"
        f" {retag['cover_bytes'] / 1000:.0f} kB cover; audio bytes unchanged in every file"
    )

    def line(title: str, values: list[str]) -> None:
        print(f"| {title} | " + " | ".join(values) + " |")

    starts = [runs[key] for key in COLUMNS]
    line("", list(COLUMNS.values()))
    line("---", ["---"] * len(starts))
    line("start → `/healthz` (s)", [f"{run['healthz_s']:.1f}" for run in starts])
    line("**start → reconcile done (s)**", [f"**{run['reconcile_s']:.1f}**" for run in starts])
    line(
        "start → all analyzed (s)",
        [f"{run['analyzed_s']:.1f}" if "analyzed_s" in run else "-" for run in starts],
    )
    line("files read by the reconcile", [str(run["files_read"]) for run in starts])
    line("reconcile counts", [_counts(run["counts"]) for run in starts])
    line("**jobs queued (new / re-queued)**", [_jobs(run["changes"]) for run in starts])
    line("contents added", [str(run["changes"]["contents_new"]) for run in starts])
    line("tracks with a new title", [str(run["changes"]["titles_changed"]) for run in starts])
    line(
        "**tracks whose id changed** (content changed; lost)",
        [_tracks(run["changes"]) for run in starts],
    )
    line("CPU s to reconcile done: host / PostgreSQL", [_cpu(run["cpu_s"]) for run in starts])
    line("peak RSS of the host (MiB)", [f"{run['peak_rss'] / 2**20:.0f}" for run in starts])
    line(
        "stop on SIGTERM",
        [f"exit {run['stopped'][0]}, {run['stopped'][1]:.1f} s" for run in starts],
    )
    line("WARNING/ERROR lines in the log", [str(len(run["problems"])) for run in starts])
    for run in starts:
        for problem in run["problems"][:5]:
            print(f"    {problem}")


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {value}" for name, value in counts.items() if value) or "none"


def _jobs(changes: dict[str, int]) -> str:
    return f"**{changes['jobs_queued']}** ({changes['jobs_new']} / {changes['jobs_touched']})"


def _tracks(changes: dict[str, int]) -> str:
    return (
        f"**{changes['track_ids_changed']}** ({changes['track_contents_changed']};"
        f" {changes['tracks_lost']})"
    )


def _cpu(cpu: dict[str, float]) -> str:
    return f"{cpu['host']:.1f} / {cpu['postgres']:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10000, help="files in the library")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of each file")
    parser.add_argument("--workers", type=int, default=4, help="[noop] workers (default 4)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (and its logs)")
    args = parser.parse_args()

    loads = [" ".join(f"{load:.2f}" for load in os.getloadavg())]
    work = Path(tempfile.mkdtemp(prefix="soundspan-rescan-bench-"))
    try:
        site = work / "site"
        install_noop_plugin(site)
        print(f"writing {args.files} tagged MP3 files ...", file=sys.stderr)
        digests = write_library(work / "music", args.files, args.seconds)
        env = ingest_environment(work, site, debounce=1.0, workers=args.workers)
        host = BenchHost(work, env)
        empty = {"tracks": {}, "jobs": {}, "contents": 0}
        runs: dict[str, dict] = {}
        runs["first"], database = run_start(host, "first", empty, analyzed=args.files)
        runs["plain"], database = run_start(host, "plain", database)
        print(f"retagging {args.files} files ...", file=sys.stderr)
        started = time.monotonic()
        retag = retag_library(work / "music", digests)
        retag_s = time.monotonic() - started
        runs["retag"], _ = run_start(host, "retag", database)
        loads.append(" ".join(f"{load:.2f}" for load in os.getloadavg()))
    finally:
        if args.keep:
            print(f"work dir kept: {work}", file=sys.stderr)
        else:
            remove_work(work)
    print_report(args, bench_settings(env), runs, retag, retag_s, loads)


if __name__ == "__main__":
    main()
