"""End-to-end benchmark (issues 16, 27): analyzers through the whole host on real music.

The model benchmarks (bench/musicnn.py, bench/clap.py) time a pool alone; this one times what a
user waits for: watcher -> catalogue -> queue -> pool -> result stored. It starts a real
`soundspan-host serve` (embedded PostgreSQL, inotify watcher, vibe_api for the status)
in a temp dir with an empty music dir and the analyzers of `--analyzer` on (`both`: MusiCNN and
CLAP; `each`: three hosts one after the other, MusiCNN alone, CLAP alone and both, each on a
fresh data dir, the same tracks), their workers, threads and precision as given (else the
plugins' own: `auto` workers share the CPUs out between the analyzers on).

When GET /api/vibe/status says every analyzer on is "ready" (start-up is reported apart: to
/healthz and to ready, which includes converting or exporting the model into the fresh data
dir), the real tracks (bench/real_music.py: Debian's soundtracks, Ogg Vorbis; hard links, or
copies, staged beforehand) are moved into the music dir as one folder, and the clock runs until
the last job of every analyzer is done (its finished_at in the database; the status is polled
every 0.5 s); each analyzer's figures are its own jobs'.
Reported: four-minute tracks/min (audio minutes analyzed / 4 / minutes) and tracks/min over
ready -> all done; the status API's own `tracks_per_minute` and `audio_minutes_per_minute`
(its last reading before the run ended, when it stops measuring) beside the same formula over
the database's finishes; the memory of the whole host from its launch (bench/whole_host.py:
the host, its workers and helpers, PostgreSQL), first start included, as the model cache of a
fresh data dir is empty: CLAP's export runs; a markdown block for bench/RESULTS.md.

CLAP: no trained weights are reachable, so by default a RANDOM CLAP is saved into the temp dir
(`--make-random-clap DIR` saves it where it can be reused, `--clap-model DIR` runs any model
folder): speed and memory only, its embeddings mean nothing.

    .venv/bin/python bench/host.py --analyzer musicnn|clap|both|each [--tracks 41] [--workers 2]
        [--threads 1] [--precision auto|fp32|int8] [--max-windows 12] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import asyncpg
import psutil
from common import BenchHost, host_environment, remove_work
from real_music import RealTrack, debian_music
from whole_host import WholeHostMemory, comparison, memory_rows

from soundspan_plugins.clap.settings import ClapSettings

POLL_SECONDS = 0.5  # during the run: the status costs the host a little CPU each time
READY_POLL_SECONDS = 0.1
READY_TIMEOUT_SECONDS = 1800.0  # a first CLAP export and int8 check take minutes on 2 cores
STALL_SECONDS = 600.0  # no job finished this long: the run is abandoned
RUNS = {
    "musicnn": [("musicnn",)],
    "clap": [("clap",)],
    "both": [("musicnn", "clap")],
    "each": [("musicnn",), ("clap",), ("musicnn", "clap")],
}
NAMES = {"musicnn": "MusiCNN", "clap": "CLAP"}
# the random CLAP's text tower reads the tests' small tokenizer: roberta-base's is unreachable
RANDOM_TEXT_VOCABULARY = 300

FINISHES = """
SELECT extract(epoch FROM j.finished_at)::float8 AS at, max(t.duration) AS seconds
FROM analysis_jobs j JOIN tracks t USING (content_id)
WHERE j.analyzer = $1 AND j.state = 'done' AND t.missing_since IS NULL
GROUP BY j.content_id, j.finished_at ORDER BY at
"""


def save_random_clap(directory: Path) -> None:
    """A random CLAP the host loads: bench/clap.py's save_random_model's audio tower
    (larger_clap_music's sizes), with a text tower whose vocabulary is the tests' tokenizer's.

    Not save_random_model itself: its roberta-base-sized text tower needs roberta-base's own
    tokenizer (the host refuses any other), which cannot be downloaded here. The text tower
    stays in the host process, so the workers measured are the same.
    """
    import torch
    from random_clap import htsat_base_roberta_config, save_tokenizer
    from transformers import ClapModel

    from soundspan_plugins.clap.laion_checkpoint import UNTRAINED_MARKER, laion_feature_extractor

    torch.manual_seed(0)
    config = htsat_base_roberta_config()
    config.text_config.vocab_size = RANDOM_TEXT_VOCABULARY
    setattr(config, UNTRAINED_MARKER, True)
    ClapModel(config).eval().save_pretrained(directory)
    save_tokenizer(directory, vocab_size=RANDOM_TEXT_VOCABULARY)
    laion_feature_extractor(num_mel_bins=64, fusion=False).save_pretrained(directory)


def analyzer_settings(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, str]:
    """The analyzers' SOUNDSPAN_* settings: those given, and CLAP's model and window cap."""
    settings = {}
    for name in names:
        prefix = f"SOUNDSPAN_{name.upper()}__"
        given = {"WORKERS": args.workers, "THREADS_PER_WORKER": args.threads}
        settings.update({prefix + key: str(value) for key, value in given.items() if value})
        settings[prefix + "PRECISION"] = args.precision
        if name == "clap":
            settings.update(
                {
                    prefix + "MODEL": str(args.clap_model),
                    prefix + "ALLOW_DOWNLOAD": "false",
                    prefix + "MAX_WINDOWS": str(args.max_windows),
                }
            )
    return settings


def stage_tracks(tracks: list[RealTrack], staging: Path) -> None:
    """Hard links to the tracks (copies across file systems), one folder per album."""
    for track in tracks:
        destination = staging / track.album / track.path.name
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(track.path, destination)
        except OSError:
            shutil.copy(track.path, destination)


def analyzer_status(host: BenchHost) -> tuple[dict, dict]:
    """({analyzer: its entry}, the library totals) from GET /api/vibe/status."""
    with urllib.request.urlopen(host.url("/api/vibe/status"), timeout=10) as answer:
        status = json.load(answer)
    return {entry["name"]: entry for entry in status["analyzers"]}, status["library"]


def wait_until_ready(host: BenchHost, names: tuple[str, ...], launched: float) -> dict:
    """Poll the status until every analyzer of `names` is ready; their entries then."""
    while time.time() - launched < READY_TIMEOUT_SECONDS:
        entries, _ = analyzer_status(host)
        for name in names:
            if entries[name]["state"] == "unavailable":
                reason = entries[name]["reason"]
                raise RuntimeError(f"{name} is unavailable: {reason}\n{host.tail()}")
        if all(entries[name]["state"] == "ready" for name in names):
            return {name: entries[name] for name in names}
        time.sleep(READY_POLL_SECONDS)
    raise RuntimeError(f"{names} not ready within {READY_TIMEOUT_SECONDS} s:\n{host.tail()}")


def follow_run(host: BenchHost, names: tuple[str, ...], tracks: int, started: float) -> dict:
    """Poll the status until every track is recorded and every job finished; what it said."""
    seen: dict = {"all_queued": None}
    seen.update({name: {"first_busy": None, "api": None} for name in names})
    last_change, last_counts = time.time(), None
    while True:
        entries, library = analyzer_status(host)
        now = time.time()
        if seen["all_queued"] is None and library["tracks"] >= tracks:
            seen["all_queued"] = now - started
        for name in names:
            entry, mine = entries[name], seen[name]
            counts = mine["counts"] = entry["counts"]
            if mine["first_busy"] is None and counts["running"] + counts["done"] > 0:
                mine["first_busy"] = now - started
            if entry["tracks_per_minute"] is not None:
                mine["api"] = {key: entry[key] for key in ("tracks_per_minute", "counts")}
                mine["api"].update(
                    audio_minutes_per_minute=entry["audio_minutes_per_minute"], at=now - started
                )
        counts = [seen[name]["counts"] for name in names]
        finished = [count["done"] + count["failed"] for count in counts]
        if library["tracks"] >= tracks and min(finished) >= library["distinct_contents"]:
            return {**seen, "contents": library["distinct_contents"]}
        if counts != last_counts:
            last_change, last_counts = now, counts
        elif now - last_change > STALL_SECONDS:
            raise RuntimeError(f"stalled at {counts}, library {library}:\n{host.tail()}")
        time.sleep(POLL_SECONDS)


async def finishes(host: BenchHost, names: tuple[str, ...]) -> dict[str, list]:
    """Per analyzer, (finished_at epoch, audio seconds) of each done job, in order."""
    db = await asyncpg.connect(host.database_url)
    try:
        return {
            name: [(row["at"], row["seconds"]) for row in await db.fetch(FINISHES, name)]
            for name in names
        }
    finally:
        await db.close()


def run(
    args: argparse.Namespace,
    names: tuple[str, ...],
    work: Path,
    tracks: list[RealTrack],
    load: tuple,
) -> dict:
    """Start the host, wait for the models, drop the tracks in, follow the run to its end."""
    stage_tracks(tracks, work / "staging" / "debian")
    (work / "music").mkdir()
    env = host_environment(work, {"watcher", "vibe_api", *names}, **analyzer_settings(args, names))
    host = BenchHost(work, env)
    result: dict = {"load_before": load, "names": names}
    memory = WholeHostMemory(host)
    memory.start()
    launched = memory.launched
    try:
        result["healthz_s"] = host.start(READY_TIMEOUT_SECONDS)
        result["ready"] = wait_until_ready(host, names, launched)
        started = time.time()
        result["ready_s"] = memory.ready_s = started - launched
        (work / "staging" / "debian").rename(work / "music" / "debian")
        result["run"] = follow_run(host, names, len(tracks), started)
        result["finishes"] = asyncio.run(finishes(host, names))
        result["started"] = started
    except BaseException:
        print(f"host log tail:\n{host.tail()}", file=sys.stderr)
        raise
    finally:
        result["stopped"] = host.stop()
        result["memory"] = memory.stop()
        result["problems"] = host.problems()
        result["log_lines"] = [
            line
            for line in host.tail(10**6).splitlines()
            if " workers x " in line or "not trained" in line or "exporting" in line
        ]
    return result


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def command(args: argparse.Namespace) -> str:
    line = f".venv/bin/python bench/host.py --analyzer {args.analyzer} --tracks {args.tracks}"
    for option, value in (("workers", args.workers), ("threads", args.threads)):
        line += f" --{option} {value}" if value else ""
    line += f" --precision {args.precision} --max-windows {args.max_windows}"
    if args.make_random_clap:
        line += f" --make-random-clap {args.make_random_clap}"
    elif args.clap_model_given:
        line += f" --clap-model {args.clap_model}"
    return line


def analyzer_rows(name: str, tracks: list[RealTrack], result: dict) -> list[tuple[str, str]]:
    """One analyzer's figures over the run: its own jobs' finishes."""
    done = result["finishes"][name]
    end = done[-1][0]
    minutes = (end - result["started"]) / 60
    if any(seconds is None for _, seconds in done):  # the host knows no length: ours, then
        audio_minutes = sum(track.seconds for track in tracks) / 60
    else:
        audio_minutes = sum(seconds for _, seconds in done) / 60
    # the status API's own formula (progress.measure_run) over the whole run: the finishes
    # after the first, over the time from the first finish to the last
    span = (end - done[0][0]) / 60
    formula_tracks = (len(done) - 1) / span if span > 0 else None
    formula_audio = sum(s or 0 for _, s in done[1:]) / 60 / span if span > 0 else None
    followed, ready = result["run"][name], result["ready"][name]
    api = followed["api"]

    def rate(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    rows = [
        ("done / failed", f"{followed['counts']['done']} / {followed['counts']['failed']}"),
        ("audio analyzed", f"{audio_minutes:.1f} min"),
        ("ready -> first job running (poll 0.5 s)", f"{followed['first_busy'] or 0:.1f} s"),
        ("ready -> first job done", f"{done[0][0] - result['started']:.1f} s"),
        ("**ready -> all done**", f"**{minutes * 60:.1f} s**"),
        ("**four-minute tracks/min**", f"**{audio_minutes / 4 / minutes:.1f}**"),
        ("**tracks/min**", f"**{len(done) / minutes:.1f}**"),
        ("audio min/min", f"{audio_minutes / minutes:.1f}"),
        (
            "status API at its last reading: tracks/min, audio min/min",
            f"{rate(api and api['tracks_per_minute'])}, "
            f"{rate(api and api['audio_minutes_per_minute'])}"
            + (f" ({api['counts']['done']} done, {api['at']:.0f} s in)" if api else ""),
        ),
        (
            "the API's formula, first -> last finish",
            f"{rate(formula_tracks)}, {rate(formula_audio)}",
        ),
        ("model, device", f"{ready['model_id']}, {ready['device']}, version {ready['version']}"),
    ]
    if ready["detail"]:
        rows.append(("detail", ready["detail"]))
    return [(f"{NAMES[name]}: {label}", value) for label, value in rows]


def report(args: argparse.Namespace, tracks: list[RealTrack], result: dict) -> None:
    """One run's figures, a markdown block for bench/RESULTS.md."""
    names = result["names"]
    load = " ".join(f"{value:.2f}" for value in result["load_before"])
    cores = f"{os.cpu_count()} cores ({psutil.cpu_count(logical=False)} physical)"
    shape = f"{args.workers or 'auto'} x {args.threads or 'default'}"
    print(
        f"\n### {' + '.join(NAMES[name] for name in names)} end to end through the host, first "
        f"start: workers {shape}, precision {args.precision} (bench/host.py)\n"
    )
    if "clap" in names and not result["ready"]["clap"]["trained"]:
        print(
            "**RANDOM CLAP WEIGHTS** (larger_clap_music's sizes, max_windows "
            f"{args.max_windows}): speed and memory only; its embeddings mean nothing.\n"
        )
    print(f"    {command(args)}\n")
    print(
        f"Machine: {cpu_model()}, {cores}, Python {platform.python_version()}; "
        f"load average before the run: {load}.\n"
    )
    followed = result["run"]
    rows = [
        ("tracks (distinct contents)", f"{len(tracks)} ({followed['contents']})"),
        ("start: to /healthz, to ready", f"{result['healthz_s']:.1f} s, {result['ready_s']:.1f} s"),
        ("ready -> all tracks recorded", f"{followed['all_queued'] or 0:.1f} s"),
    ]
    for name in names:
        rows += analyzer_rows(name, tracks, result)
    print("| measure | value |\n|---|---|")
    for label, value in rows + memory_rows(result["memory"]):
        print(f"| {label} | {value} |")
    print("\nhost log:")
    for line in result["log_lines"]:
        print(f"    {line}")
    stopped_code, stopped_s = result["stopped"]
    print(
        f"host stop: exit {stopped_code} after {stopped_s:.1f} s; "
        f"WARNING/ERROR lines in its log: {len(result['problems'])}"
    )
    for line in result["problems"][:10]:
        print(f"    {line}")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--analyzer", choices=tuple(RUNS), required=True)
    parser.add_argument("--tracks", type=int, default=None, help="real tracks (default: all)")
    parser.add_argument("--workers", type=int, default=None, help="default: the plugins' (auto)")
    parser.add_argument("--threads", type=int, default=None, help="threads per worker")
    parser.add_argument("--precision", choices=("auto", "fp32", "int8"), default="auto")
    parser.add_argument(
        "--max-windows", type=int, default=ClapSettings().max_windows, help="[clap]"
    )
    parser.add_argument("--clap-model", type=Path, help="[clap] model: a model folder")
    parser.add_argument(
        "--make-random-clap", type=Path, metavar="DIR", help="save a random CLAP here and run it"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dirs (and logs)")
    args = parser.parse_args()
    args.clap_model_given = args.clap_model is not None
    return args


def main() -> None:
    args = arguments()
    load = os.getloadavg()  # before this script's own work (a CLAP saved) raises it
    all_tracks = debian_music()
    count = min(args.tracks or len(all_tracks), len(all_tracks))
    tracks = all_tracks[:: max(1, len(all_tracks) // count)][:count]  # spread over both albums
    args.tracks = count
    runs = RUNS[args.analyzer]
    saved = Path(tempfile.mkdtemp(prefix="soundspan-host-bench-clap-"))
    results = []
    try:
        if args.analyzer != "musicnn" and (args.make_random_clap or args.clap_model is None):
            args.clap_model = args.make_random_clap or saved / "random-clap"
            print(f"saving a RANDOM CLAP into {args.clap_model} ...", file=sys.stderr)
            save_random_clap(args.clap_model)
        for names in runs:
            print(f"{' + '.join(names)}: {count} tracks ...", file=sys.stderr)
            work = Path(tempfile.mkdtemp(prefix="soundspan-host-bench-"))
            try:
                results.append(run(args, names, work, tracks, load))
            finally:
                if args.keep:
                    print(f"work dir kept: {work}", file=sys.stderr)
                else:
                    remove_work(work)
            load = os.getloadavg()
    finally:
        shutil.rmtree(saved, ignore_errors=True)
    for result in results:
        report(args, tracks, result)
    if len(results) > 1:
        labels = [" + ".join(NAMES[name] for name in result["names"]) for result in results]
        comparison(list(zip(labels, results, strict=True)))


if __name__ == "__main__":
    main()
