"""Ingest benchmark (issue 4): how fast a running host indexes files dropped into its music dir.

It starts the real host (`soundspan-host serve`: embedded PostgreSQL, the inotify
watcher) in a temporary folder, with a no-op analyzer (bench/noop_analyzer) installed by entry
point, so no model time is counted: what is measured is watcher + catalogue + queue + database.

Phase A, throughput: N small WAV files (16 kHz mono, 0.05 s, each a different tone, so each is
    a different content) are made in a staging folder outside the music dir, then copied one
    by one, as fast as possible, into <music>/drop/. Reported: seconds from the first copy
    until every file has its analysis job (queued) and until every job is done.
Phase A2, the same for N' more files arriving as one folder moved (renamed) into the music dir.
Phase B, latency on an idle host: M files written straight into <music>/latency/, one every
    0.5 s. Latency of a file = its job's finished_at (database clock, same machine) minus
    time.time() just before the file was written: p50 / p90 / max.

Also reported: peak RSS of the host process and of its file-reading processes; per phase, CPU
seconds used by the host, its file-reading processes, its PostgreSQL server and this script, and
database transactions committed per file. Only the watcher and the noop analyzer are enabled;
every other plugin is disabled through its SOUNDSPAN_<NAME>__ENABLED variable. `--workers 0`
runs no analysis at all and times the queueing alone (watcher + catalogue).

Run from the repository root:

    .venv/bin/python bench/ingest.py [--files 10000] [--latency-files 50] [--folder-files N]
                                     [--debounce 1.0] [--workers 4] [--batch-files 500]
                                     [--read-processes auto] [--keep]

`--batch-files 1` records settled files one at a time, one transaction each, as ingest did
before it recorded bursts in batches (issue 16); `--read-processes 0` reads files in the host's
own threads, as before they were read in processes (issue 27): the same run, before and after.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import hashlib
import math
import os
import shutil
import sys
import tempfile
import time
import wave
from pathlib import Path

import asyncpg
import psutil
from common import BenchHost, host_environment, remove_work

from soundspan_host.plugins import ENTRY_POINT_GROUP

BENCH = Path(__file__).resolve().parent
NOOP_SOURCE = BENCH / "noop_analyzer"
NOOP_MODULE = "soundspan_bench_noop"

SAMPLE_RATE = 16000
TONE_FRAMES = 800  # 0.05 s
LATENCY_INTERVAL_SECONDS = 0.5
STALL_SECONDS = 120.0  # a phase whose job counts stop moving this long is abandoned
POLL_SECONDS = 0.25


# --- setting up ------------------------------------------------------------------------------


def install_noop_plugin(site: Path) -> None:
    """Install the noop analyzer into `site` as a distribution with an entry point."""
    site.mkdir(parents=True, exist_ok=True)
    shutil.copy(NOOP_SOURCE / f"{NOOP_MODULE}.py", site)
    dist_info = site / f"{NOOP_MODULE}-1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {NOOP_MODULE.replace('_', '-')}\nVersion: 1\n"
    )
    (dist_info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nnoop = {NOOP_MODULE}\n")


def tone(index: int, count: int) -> bytes:
    """16-bit samples of the index-th of `count` tones, spread from 110 Hz to 7.1 kHz."""
    frequency = 110.0 + 7000.0 * index / max(count, 1)
    step = 2 * math.pi * frequency / SAMPLE_RATE
    samples = array.array("h", (int(12000 * math.sin(step * n)) for n in range(TONE_FRAMES)))
    return samples.tobytes()


def write_wav(path: Path, frames: bytes) -> None:
    """Write a 16 kHz mono 16-bit WAV file."""
    with wave.open(str(path), "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(SAMPLE_RATE)
        audio.writeframes(frames)


class Tones:
    """Hands out distinct tones, and checks that no two are the same bytes."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.next = 0
        self.seen: set[bytes] = set()

    def take(self) -> bytes:
        frames = tone(self.next, self.count)
        self.next += 1
        digest = hashlib.blake2b(frames, digest_size=16).digest()
        if digest in self.seen:
            raise RuntimeError(f"tone {self.next - 1} repeats an earlier one; use fewer files")
        self.seen.add(digest)
        return frames

    def stage(self, folder: Path, prefix: str, count: int) -> list[Path]:
        """Write `count` distinct WAV files into `folder` (outside the music dir)."""
        folder.mkdir(parents=True)
        paths = [folder / f"{prefix}{index:05d}.wav" for index in range(count)]
        for path in paths:
            write_wav(path, self.take())
        return paths


# --- the host ---------------------------------------------------------------------------------


def ingest_environment(
    work: Path, site: Path, debounce: float, workers: int, batch_files: int, read_processes: str
) -> dict:
    """Only the watcher and noop enabled. The settings a result depends on are set here
    explicitly, at their defaults, so that a changed settings.toml does not change the bench."""
    return host_environment(
        work,
        {"watcher", "noop"},
        SOUNDSPAN_WATCHER__DEBOUNCE_SECONDS=str(debounce),
        SOUNDSPAN_WATCHER__POLL_INTERVAL="0.0",  # inotify
        SOUNDSPAN_WATCHER__BATCH_FILES=str(batch_files),
        SOUNDSPAN_WATCHER__READ_PROCESSES=read_processes,
        SOUNDSPAN_NOOP__WORKERS=str(workers),
        SOUNDSPAN_NOOP__POLL_INTERVAL="5.0",
        PYTHONPATH=os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
    )


def bench_settings(env: dict) -> dict[str, str]:
    """The SOUNDSPAN_* variables the host runs with, for the report."""
    return {name: value for name, value in sorted(env.items()) if name.startswith("SOUNDSPAN_")}


# --- measuring --------------------------------------------------------------------------------


JOB_COUNTS = """
SELECT count(*) AS queued,
       count(*) FILTER (WHERE state = 'done') AS done,
       count(*) FILTER (WHERE state = 'failed') AS failed,
       extract(epoch FROM max(created_at))::float8 AS last_queued,
       extract(epoch FROM max(finished_at))::float8 AS last_finished
FROM analysis_jobs WHERE analyzer = 'noop'
"""

FILE_TIMES = """
SELECT t.path, extract(epoch FROM t.added_at)::float8 AS added,
       extract(epoch FROM j.finished_at)::float8 AS done
FROM tracks t JOIN analysis_jobs j ON j.content_id = t.content_id AND j.analyzer = 'noop'
WHERE t.path LIKE $1 || '/%'
"""


async def commits(db: asyncpg.Connection) -> int:
    """Transactions committed in the host's database so far, from PostgreSQL's statistics.

    Backends report them lazily (an idle one may hold a few until its next statement), and
    this script's own polling counts too (one statement every POLL_SECONDS): good to about
    a percent over a phase of thousands of files, meaningless over a few.
    """
    return await db.fetchval(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
    )


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)]


def spread(values: list[float]) -> dict[str, float]:
    """p50, p90 and max of some seconds; empty if there are none."""
    if not values:
        return {}
    return {
        "p50": percentile(values, 0.5),
        "p90": percentile(values, 0.9),
        "max": max(values),
    }


async def wait_for_jobs(
    db: asyncpg.Connection, expected: int, label: str, until_done: bool
) -> asyncpg.Record:
    """Poll the queue until `expected` noop jobs exist (and are all done, if `until_done`).

    Gives up when the counts stop moving for STALL_SECONDS.
    """
    last_change = time.monotonic()
    last_seen = None
    last_print = 0.0
    while True:
        counts = await db.fetchrow(JOB_COUNTS)
        seen = (counts["queued"], counts["done"], counts["failed"])
        if seen != last_seen:
            last_seen, last_change = seen, time.monotonic()
        finished = counts["done"] + counts["failed"] if until_done else counts["queued"]
        if finished >= expected:
            return counts
        if time.monotonic() - last_change > STALL_SECONDS:
            print(f"{label}: stalled at {dict(counts)}", file=sys.stderr)
            return counts
        if time.monotonic() - last_print > 5:
            last_print = time.monotonic()
            print(
                f"  {label}: queued {seen[0]}, done {seen[1]}, failed {seen[2]} of {expected}",
                file=sys.stderr,
            )
        await asyncio.sleep(POLL_SECONDS)


async def per_file_latency(
    db: asyncpg.Connection, folder: str, created: dict[str, float]
) -> tuple[list[float], list[float]]:
    """(created -> job done, created -> track recorded) in seconds, for files under `folder`."""
    rows = await db.fetch(FILE_TIMES, folder)
    done = [row["done"] - created[row["path"]] for row in rows if row["done"] is not None]
    recorded = [row["added"] - created[row["path"]] for row in rows]
    return done, recorded


async def throughput_phase(
    db: asyncpg.Connection,
    host: BenchHost,
    label: str,
    folder: str,
    bring_in,
    count: int,
    until_done: bool,
) -> dict:
    """Bring `count` files into <music>/<folder> with `bring_in()`, then time queue and done.

    `bring_in` returns {relative path: time.time() it arrived} and is timed itself.
    """
    before = await db.fetchrow(JOB_COUNTS)
    cpu_before = cpu_seconds(host)
    commits_before = await commits(db)
    started = time.time()
    created = bring_in()
    copied = time.time() - started
    counts = await wait_for_jobs(db, before["queued"] + count, label, until_done)
    cpu_after = cpu_seconds(host)
    await asyncio.sleep(2.0)
    commits_after = await commits(db)
    done_latency, recorded_latency = await per_file_latency(db, folder, created)
    return {
        "files": count,
        "bring_in_s": copied,
        "queued": counts["queued"] - before["queued"],
        "done": counts["done"] - before["done"],
        "failed": counts["failed"] - before["failed"],
        "all_queued_s": since(counts["last_queued"], started),
        "all_done_s": since(counts["last_finished"], started) if until_done else None,
        "per_file_done_s": spread(done_latency),
        "per_file_recorded_s": spread(recorded_latency),
        "cpu_s": {name: cpu_after[name] - cpu_before[name] for name in cpu_after},
        "commits_per_file": (commits_after - commits_before) / count,
    }


def cpu_seconds(host: BenchHost) -> dict[str, float]:
    """BenchHost's CPU seconds, and those of the host's file-reading processes (its spawned
    children: the noop analyzer starts none)."""
    readers = 0.0
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(host.process.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "spawn_main" in " ".join(child.cmdline()):
                    times = child.cpu_times()
                    readers += times.user + times.system
    return {**host.cpu_seconds(), "readers": readers}


def since(epoch: float | None, started: float) -> float | None:
    """Seconds from `started` to a database timestamp, if there is one."""
    return None if epoch is None else epoch - started


def copy_one_by_one(staged: list[Path], music: Path, folder: str) -> dict[str, float]:
    """shutil.copy each staged file into <music>/<folder>/, as fast as possible."""
    created = {}
    for path in staged:
        created[f"{folder}/{path.name}"] = time.time()
        shutil.copy(path, music / folder / path.name)
    return created


def move_folder(staged_folder: Path, music: Path, folder: str) -> dict[str, float]:
    """Rename a whole staged folder into the music dir (one rename, same file system)."""
    moved = time.time()
    names = sorted(path.name for path in staged_folder.iterdir())
    staged_folder.rename(music / folder)
    return {f"{folder}/{name}": moved for name in names}


async def latency_phase(
    db: asyncpg.Connection, host: BenchHost, music: Path, tones: Tones, count: int, until_done: bool
) -> dict:
    """Write `count` files one every 0.5 s into <music>/latency; time each to its job's end."""
    before = await db.fetchrow(JOB_COUNTS)
    cpu_before = cpu_seconds(host)
    created = {}
    next_at = time.monotonic()
    for index in range(count):
        frames = tones.take()
        relative = f"latency/lat{index:05d}.wav"
        created[relative] = time.time()
        write_wav(music / relative, frames)
        next_at += LATENCY_INTERVAL_SECONDS
        await asyncio.sleep(max(next_at - time.monotonic(), 0))
    counts = await wait_for_jobs(db, before["queued"] + count, "latency", until_done)
    cpu_after = cpu_seconds(host)
    done_latency, recorded_latency = await per_file_latency(db, "latency", created)
    return {
        "files": count,
        "done": counts["done"] - before["done"],
        "failed": counts["failed"] - before["failed"],
        "latency_s": spread(done_latency),
        "recorded_s": spread(recorded_latency),
        "cpu_s": {name: cpu_after[name] - cpu_before[name] for name in cpu_after},
    }


# --- the run ----------------------------------------------------------------------------------


async def measure(args: argparse.Namespace, work: Path, host: BenchHost) -> dict:
    """Phases A, A2 and B against a started host."""
    music = work / "music"
    tones = Tones(args.files + args.folder_files + args.latency_files)
    print(f"staging {args.files + args.folder_files} WAV files ...", file=sys.stderr)
    staged = tones.stage(work / "staging" / "drop", "drop", args.files)
    if args.folder_files:
        tones.stage(work / "staging" / "album", "album", args.folder_files)
    for folder in ("drop", "latency"):
        (music / folder).mkdir()
    await asyncio.sleep(1.0)  # the watcher adds its watches on the new folders

    db = await asyncpg.connect(host.database_url)
    try:
        results: dict = {}
        until_done = args.workers > 0
        print(f"phase A: copying {args.files} files one by one ...", file=sys.stderr)
        results["copy"] = await throughput_phase(
            db,
            host,
            "copy",
            "drop",
            lambda: copy_one_by_one(staged, music, "drop"),
            args.files,
            until_done,
        )
        if args.folder_files:
            print(f"phase A2: moving a folder of {args.folder_files} in ...", file=sys.stderr)
            results["folder"] = await throughput_phase(
                db,
                host,
                "folder",
                "album",
                lambda: move_folder(work / "staging" / "album", music, "album"),
                args.folder_files,
                until_done,
            )
        if args.latency_files:
            await asyncio.sleep(2.0)  # idle
            print(f"phase B: {args.latency_files} files, one every 0.5 s ...", file=sys.stderr)
            results["latency"] = await latency_phase(
                db, host, music, tones, args.latency_files, until_done
            )
        return results
    finally:
        await db.close()


def print_report(
    args, settings, startup_s, results, peak_rss, reader_peaks, stopped, problems
) -> None:
    """The results, as plain text."""

    def row(name: str, value: object) -> None:
        print(f"  {name:<42} {value}")

    def seconds(values: dict[str, float]) -> str:
        return " / ".join(f"{values[key]:.3f}" for key in ("p50", "p90", "max")) if values else "-"

    print("\n== soundspan ingest benchmark ==")
    print(
        f"  {sys.executable} bench/ingest.py --files {args.files} "
        f"--folder-files {args.folder_files} --latency-files {args.latency_files} "
        f"--debounce {args.debounce} --workers {args.workers} --batch-files {args.batch_files} "
        f"--read-processes {args.read_processes}"
    )
    print("settings:")
    for name, value in settings.items():
        row(name, value)
    row("host start (to /healthz)", f"{startup_s:.1f} s")
    for key, title in (("copy", "A: copied one by one"), ("folder", "A2: one folder moved in")):
        if key not in results:
            continue
        phase = results[key]
        print(f"{title} ({phase['files']} files):")
        row("seconds to bring them in", f"{phase['bring_in_s']:.2f}")
        row("queued / done / failed", f"{phase['queued']} / {phase['done']} / {phase['failed']}")
        for what in ("queued", "done"):
            took = phase[f"all_{what}_s"]
            if took is not None:
                row(f"seconds until all {what}", f"{took:.2f}")
                row(f"files/s (all {what})", f"{phase['files'] / took:.0f}")
        row("per file: arrival -> recorded p50/p90/max", seconds(phase["per_file_recorded_s"]))
        row("per file: arrival -> job done p50/p90/max", seconds(phase["per_file_done_s"]))
        row("CPU s host / readers / postgres / bench", _cpu(phase["cpu_s"]))
        row("database commits per file", f"{phase['commits_per_file']:.2f}")
    if "latency" in results:
        phase = results["latency"]
        print(f"B: latency on an idle host ({phase['files']} files, one every 0.5 s):")
        row("done / failed", f"{phase['done']} / {phase['failed']}")
        row("created -> job done p50/p90/max (s)", seconds(phase["latency_s"]))
        row("created -> track recorded p50/p90/max (s)", seconds(phase["recorded_s"]))
        row("CPU s host / readers / postgres / bench", _cpu(phase["cpu_s"]))
    row("peak RSS of the host process", f"{peak_rss / 2**20:.0f} MiB")
    row(
        "peak RSS of its read processes",
        " + ".join(f"{peak / 2**20:.0f}" for peak in reader_peaks) + " MiB"
        if reader_peaks
        else "-",
    )
    row("host stop (SIGTERM)", f"exit {stopped[0]} after {stopped[1]:.1f} s")
    row("WARNING/ERROR lines in the host log", len(problems))
    for line in problems[:10]:
        print(f"    {line}")


def _cpu(cpu: dict[str, float]) -> str:
    return " / ".join(f"{cpu[name]:.1f}" for name in ("host", "readers", "postgres", "bench"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10000, help="phase A: files copied in")
    parser.add_argument(
        "--folder-files",
        type=int,
        default=None,
        help="phase A2: files in the folder moved in (default: as --files; 0 skips it)",
    )
    parser.add_argument("--latency-files", type=int, default=50, help="phase B: files timed")
    parser.add_argument(
        "--debounce", type=float, default=1.0, help="[watcher] debounce_seconds (default 1.0)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=4,
        help="[noop] workers (default 4); 0: no analysis, only queueing is timed",
    )
    parser.add_argument(
        "--batch-files",
        type=int,
        default=500,
        help="[watcher] batch_files (default 500); 1: one file per transaction, as before",
    )
    parser.add_argument(
        "--read-processes",
        default="auto",
        help='[watcher] read_processes (default "auto"); 0: read in the host\'s threads, as before',
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir (and its log)")
    args = parser.parse_args()
    if args.folder_files is None:
        args.folder_files = args.files

    work = Path(tempfile.mkdtemp(prefix="soundspan-ingest-bench-"))
    site = work / "site"
    install_noop_plugin(site)
    (work / "music").mkdir()
    env = ingest_environment(
        work, site, args.debounce, args.workers, args.batch_files, args.read_processes
    )
    host = BenchHost(work, env)
    try:
        startup_s = host.start(sample_workers=True)
        enabled = sorted(plugin["name"] for plugin in host.plugins() if plugin["enabled"])
        if enabled != ["noop", "watcher"]:
            raise RuntimeError(f"expected only the noop and watcher plugins, got {enabled}")
        results = asyncio.run(measure(args, work, host))
    except BaseException:
        print(f"host log tail:\n{host.tail()}", file=sys.stderr)
        raise
    finally:
        stopped = host.stop()
        problems = host.problems()
        if args.keep:
            print(f"work dir kept: {work}", file=sys.stderr)
        else:
            remove_work(work)
    peak = host.memory.peak if host.memory else 0
    readers = list(host.workers.peaks.values()) if host.workers else []
    print_report(args, bench_settings(env), startup_s, results, peak, readers, stopped, problems)


if __name__ == "__main__":
    main()
