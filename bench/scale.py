"""Vibe API at a million tracks (issue 27 item 5): the load, the HNSW builds, latency, recall and
the map, in one run on one host and one library.

The host and the library are bench/api.py's (the real host with embedded PostgreSQL + pgvector,
the watcher off, `[musicnn]` and `[clap]` with `workers = 0`, `[clap] model` a tiny random CLAP,
synthetic tracks around 500 gaussian clusters; musicnn tag probabilities over the real MSD tags
as in bench/journeys.py), `[vibe_api] map_projection = pca` (UMAP would be another benchmark).
The library is COPY'd in chunks (`--chunk` tracks generated at a time, sharing their clusters),
so the bench's memory does not grow with `--tracks`. Measured:

  * the load: the COPY; per HNSW index (musicnn 200-d, clap 512-d unless `--musicnn-only`) the
    build time with `maintenance_work_mem` set so that the graph fits in memory (`--mwm-mib`,
    by default estimated from the size of the vectors), the peak RSS of the building backend
    and of its parallel workers, the fall of MemAvailable, and pgvector's NOTICE if the graph
    did not fit after all; the index and table sizes, the database's size;
  * recall@10 for `--recall-sources` sources: api.py's, the API's HNSW query with LIMIT 10
    against the same query with index scans off (a lower bound for the API's lists, which
    read 4 candidates per result);
  * over HTTP from a load generator process, the cases taking turns (one request of each in
    turn, after warm-ups, so that machine noise falls on all alike): GET /api/vibe/similar
    with limit 20 and 200 per analyzer, POST /api/vibe/search (tiny CLAP text tower, with
    clap), GET /api/vibe/path length 12 per analyzer;
  * the first GET /api/vibe/map?analyzer=musicnn (a full computation): its time, the host's RSS
    and CPU during it, the peak RSS and CPU of the process the host spawns to draw it, its
    size; and similar requests (musicnn, limit 20) one at a time before, during and after it,
    those overlapping it apart from the others;
  * the peak RSS of the host process and of PostgreSQL's processes over the whole run.

Like journeys.py, it first waits (up to 15 minutes) for the load average to fall to 1.5, unless
`--no-wait`. Run from the repository root (2 cores: about 1 minute at 50,000 tracks; 15 to 25
minutes estimated at 1,000,000, mostly the HNSW builds, the COPY and the exact scans of recall):

    .venv/bin/python bench/scale.py [--tracks 1000000] [--requests 300] [--recall-sources 50]
        [--musicnn-only] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import asyncpg
import psutil
from api import (
    ANALYZERS,
    SEARCH_TEXTS,
    api_environment,
    build_index,
    copy_library,
    percentile,
    recall_at_10,
    report_host_end,
    stop_and_clean,
    track_id,
)
from common import BenchHost, ChildMemory
from journeys import (
    PATH_LENGTH,
    WARM_UP_REQUESTS,
    Client,
    LoadGenerator,
    cold_map,
    latency_summary,
    map_lines,
    wait_for_quiet,
)
from pgvector.asyncpg import register_vector

from soundspan_plugins.musicnn.tags import MSD_TAGS

SIMILAR_LIMITS = (20, 200)
BESIDE_MAP = 50  # similar requests before the first map request, and again after it
CHUNK = 100_000
# pgvector's in-memory graph per track beyond the vector itself: the element, its layer-0
# list of 2 m = 32 neighbours (16 bytes each), upper layers and allocation headers
GRAPH_BYTES_PER_TRACK = 800
GRAPH_MARGIN = 1.25
MIN_MWM_MIB = 2048  # bench/api.py's 2GB
DIMENSIONS = {"musicnn": 200, "clap": 512}
TABLES = ("contents", "tracks", "analysis_jobs", "musicnn_results", "clap_results")
INDEXES = ("musicnn_results_embedding", "clap_results_embedding")
SLOW_MS = 200


# --- the load generator's requests (its own process) ------------------------------------------


class ScaleClient(Client):
    """journeys.py's client, with similar and search requests, cases in turn, and the map with
    similar requests beside it."""

    async def _timed_similar(self, analyzer: str, limit: int) -> tuple[float, float, int]:
        """(wall time at start, seconds, results) of one similar request for a random track."""
        wall, started = time.time(), time.perf_counter()
        body = await self._get(
            f"/api/vibe/similar/{track_id(self.rng.randrange(self.count))}",
            analyzer=analyzer,
            limit=str(limit),
        )
        return wall, time.perf_counter() - started, len(json.loads(body)["results"])

    async def _timed_search(self, _analyzer: str, limit: int) -> tuple[float, float, int]:
        request = {"text": self.rng.choice(SEARCH_TEXTS), "limit": limit}
        wall, started = time.time(), time.perf_counter()
        async with self.session.post("/api/vibe/search", json=request) as answer:
            body = await answer.read()
            if answer.status != 200:
                raise RuntimeError(f"POST /api/vibe/search answered {answer.status}: {body[:200]}")
        seconds = time.perf_counter() - started
        found = json.loads(body)
        if found["analyzer"] != "clap":
            raise RuntimeError(f"POST /api/vibe/search answered by {found['analyzer']}, not clap")
        return wall, seconds, len(found["results"])

    async def _timed_case(self, case: tuple[str, str, int]) -> tuple[float, float, int]:
        route, analyzer, size = case
        if route == "path":
            return await self._timed_path(analyzer)
        timed = self._timed_similar if route == "similar" else self._timed_search
        return await timed(analyzer, size)

    async def in_turn(self, cases: list[tuple[str, str, int]], requests: int) -> list[dict]:
        """`requests` rounds of one request per case, after WARM_UP_REQUESTS rounds; per case
        p50/p99/max and the answers' sizes."""
        for _ in range(WARM_UP_REQUESTS):
            for case in cases:
                await self._timed_case(case)
        samples: list[list] = [[] for _ in cases]
        for _ in range(requests):
            for case, timed in zip(cases, samples, strict=True):
                timed.append(await self._timed_case(case))
        return [latency_summary(timed) for timed in samples]

    async def map_beside(self, analyzer: str, before: int, after: int) -> dict:
        """The map (journeys' `map`), with similar requests (musicnn, limit 20) one at a time
        beside it: `before` of them before it is asked for, and `after` once it answered.

        The map's JSON is parsed once the similar requests are done: parsed at once, its
        hundreds of milliseconds (seconds at a million tracks) in this process's event loop
        were counted in the similar request then in flight, as if the host were slow."""
        similar: list[tuple[float, float, int]] = []
        done = asyncio.Event()

        async def similar_beside() -> None:
            while not done.is_set():
                similar.append(await self._timed_similar("musicnn", SIMILAR_LIMITS[0]))

        async def until(count: int) -> None:
            while len(similar) < count and not beside.done():
                await asyncio.sleep(0.01)

        beside = asyncio.create_task(similar_beside())
        try:
            await until(before)
            started, timer = time.time(), time.perf_counter()
            body = await self._get("/api/vibe/map", analyzer=analyzer)
            seconds, window = time.perf_counter() - timer, (started, time.time())
            await until(len(similar) + after)
        finally:
            done.set()
            await beside
        parsed = json.loads(body)
        points = parsed["points"]
        return {
            "s": seconds,
            "bytes": len(body),
            "points": len(points),
            "labelled": sum(point["label"] is not None for point in points),
            "method": parsed["method"],
            "window": window,
            "similar": similar,
        }


# --- memory -----------------------------------------------------------------------------------


class SpawnedProcesses(ChildMemory):
    """ChildMemory (each spawned process's peak RSS), with the CPU seconds each had used when
    last seen: the map's own process, where the host draws it in one."""

    def __init__(self, pid: int) -> None:
        super().__init__(pid)
        self.cpu: dict[int, float] = {}

    def saw(self, child: psutil.Process) -> None:
        super().saw(child)
        times = child.cpu_times()
        self.cpu[child.pid] = times.user + times.system


class PostgresMemory(threading.Thread):
    """Every 0.2 s, the RSS of each of PostgreSQL's processes: the peaks of `backend`'s, of its
    parallel workers' (summed), of the largest process's and of all summed, and the lowest
    MemAvailable. A process's RSS counts the shared memory it touched (shared buffers, the
    parallel build's graph), so sums count those more than once."""

    def __init__(self, postmaster: int, backend: int | None = None) -> None:
        super().__init__(daemon=True)
        self.postmaster = psutil.Process(postmaster)
        self.backend = backend
        self.peaks = {"backend": 0, "parallel workers": 0, "largest process": 0, "all": 0}
        self.available_before = psutil.virtual_memory().available
        self.available_low = self.available_before
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.2):
            now = dict.fromkeys(self.peaks, 0)
            with contextlib.suppress(psutil.Error):
                for process in [self.postmaster, *self.postmaster.children()]:
                    with contextlib.suppress(psutil.Error):
                        rss = process.memory_info().rss
                        if process.pid == self.backend:
                            now["backend"] = rss
                        elif "parallel worker" in " ".join(process.cmdline()):
                            now["parallel workers"] += rss
                        now["largest process"] = max(now["largest process"], rss)
                        now["all"] += rss
            for kind, rss in now.items():
                self.peaks[kind] = max(self.peaks[kind], rss)
            self.available_low = min(self.available_low, psutil.virtual_memory().available)

    def stop(self) -> dict:
        """Stop sampling; the peaks (MiB) and the fall of MemAvailable (MiB)."""
        self.stopping.set()
        self.join()
        return {
            **{kind: rss / 2**20 for kind, rss in self.peaks.items()},
            "available_fall": (self.available_before - self.available_low) / 2**20,
        }


def mwm_mib(tracks: int, analyzers: list[str]) -> int:
    """maintenance_work_mem (MiB) for the largest graph to be built in memory, whole GiB."""
    largest = max(DIMENSIONS[analyzer] for analyzer in analyzers)
    graph = tracks * (4 * largest + 8 + GRAPH_BYTES_PER_TRACK) * GRAPH_MARGIN
    return max(MIN_MWM_MIB, 1024 * math.ceil(graph / 2**30))


def disk_bytes(folder: Path) -> int:
    """What the files under `folder` take on disk."""
    return sum(
        os.lstat(os.path.join(root, name)).st_blocks * 512
        for root, _, names in os.walk(folder)
        for name in names
    )


# --- the run ----------------------------------------------------------------------------------


async def load(host: BenchHost, args, analyzers: list[str]) -> dict:
    """COPY the library, build each index (memory sampled), sizes, recall@10."""
    db = await asyncpg.connect(host.database_url)
    notices: list[str] = []
    db.add_log_listener(lambda _, message: notices.append(message.message))
    try:
        await register_vector(db)
        print(f"loading {args.tracks} tracks ...", file=sys.stderr)
        loaded = {
            "copy_s": await copy_library(db, args.tracks, MSD_TAGS, analyzers, chunk=args.chunk)
        }
        await db.execute(f"SET maintenance_work_mem = '{args.mwm_mib}MB'")
        loaded["settings"] = {
            name: await db.fetchval(f"SHOW {name}")
            for name in ("maintenance_work_mem", "max_parallel_maintenance_workers",
                         "shared_buffers", "dynamic_shared_memory_type")
        }  # fmt: skip
        backend = await db.fetchval("SELECT pg_backend_pid()")
        for analyzer in analyzers:
            print(f"HNSW build, {analyzer} ...", file=sys.stderr)
            sampler = PostgresMemory(host.postmaster_pid(), backend)
            sampler.start()
            notices.clear()
            seconds = await build_index(db, f"{analyzer}_results")
            loaded[f"build_{analyzer}"] = {"s": seconds, **sampler.stop(), "notices": notices[:]}
        await db.execute("ANALYZE")
        loaded["sizes"] = {
            row["name"]: (row["main"], row["total"])
            for row in await db.fetch(
                "SELECT relname AS name, pg_relation_size(oid) AS main,"
                " pg_total_relation_size(oid) AS total FROM pg_class WHERE relname = ANY($1)",
                [*TABLES, *INDEXES],
            )
        }
        loaded["database"] = await db.fetchval("SELECT pg_database_size(current_database())")
        loaded["data_dir"] = disk_bytes((host.work / "data" / "postgres").resolve())
        for analyzer in analyzers:
            print(f"recall@10, {analyzer} ...", file=sys.stderr)
            loaded[f"recall_{analyzer}"] = await recall_at_10(
                db, f"{analyzer}_results", args.tracks, args.recall_sources
            )
        return loaded
    finally:
        await db.close()


def http_cases(analyzers: list[str]) -> list[tuple[str, str, int]]:
    """(route, analyzer, limit or length) of each case that takes its turn."""
    cases = [("similar", analyzer, limit) for analyzer in analyzers for limit in SIMILAR_LIMITS]
    if "clap" in analyzers:
        cases.append(("search", "clap", 20))
    return cases + [("path", analyzer, PATH_LENGTH) for analyzer in analyzers]


def measure_http(host: BenchHost, args, analyzers: list[str], started: float) -> dict:
    """The HTTP cases in turn, then the first musicnn map with similar requests beside it."""
    generator = LoadGenerator(host.url(""), args.tracks, ScaleClient)
    try:
        cases = http_cases(analyzers)
        print(f"{len(cases)} HTTP cases in turn ...", file=sys.stderr)
        answers = generator.ask("in_turn", cases=cases, requests=args.requests)
        measured = {"cases": list(zip(cases, answers, strict=True))}
        measured["http_at_s"] = time.monotonic() - started
        print("the first musicnn map, similar requests beside it ...", file=sys.stderr)
        spawned = SpawnedProcesses(host.process.pid)
        spawned.start()
        measured["map"] = cold_map(
            host, generator, "musicnn", command="map_beside", before=BESIDE_MAP, after=BESIDE_MAP
        )
        spawned.stopping.set()
        spawned.join()
        measured["map"]["spawned"] = {
            pid: {"rss_peak": peak, "cpu": spawned.cpu[pid]} for pid, peak in spawned.peaks.items()
        }
        measured["map_lines"] = map_lines(host)
        return measured
    finally:
        generator.close()


def main() -> None:
    # torch is imported here, not at module level: the load generator process re-imports
    # this module and needs none of it
    from random_clap import save_tiny_clap

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=300, help="requests per HTTP case")
    parser.add_argument("--recall-sources", type=int, default=50)
    parser.add_argument("--musicnn-only", action="store_true", help="no CLAP results at all")
    parser.add_argument("--chunk", type=int, default=CHUNK, help="tracks generated at a time")
    parser.add_argument("--mwm-mib", type=int, help="maintenance_work_mem (default: estimated)")
    parser.add_argument("--no-wait", action="store_true", help="start at any load average")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (and its log)")
    args = parser.parse_args()
    analyzers = ["musicnn"] if args.musicnn_only else list(ANALYZERS)
    mwm_estimated = args.mwm_mib is None
    if mwm_estimated:
        args.mwm_mib = mwm_mib(args.tracks, analyzers)

    results: dict = {"load_at_start": os.getloadavg() if args.no_wait else wait_for_quiet()}
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="soundspan-scale-bench-"))
    (work / "music").mkdir()
    env = api_environment(work, save_tiny_clap(work / "tiny-clap", projection_dim=512))
    env["SOUNDSPAN_VIBE_API__MAP_PROJECTION"] = "pca"
    host = BenchHost(work, env)
    try:
        results["startup_s"] = host.start()
        postgres = PostgresMemory(host.postmaster_pid())
        postgres.start()
        host.wait_for_models()
        results["load"] = asyncio.run(load(host, args, analyzers))
        results["loaded_at_s"] = time.monotonic() - started
        results["load_before_http"] = os.getloadavg()
        results.update(measure_http(host, args, analyzers, started))
        results["postgres"] = postgres.stop()
        results["total_s"] = time.monotonic() - started
    except BaseException:
        print(f"host log tail:\n{host.tail()}", file=sys.stderr)
        raise
    finally:
        stopped, problems = stop_and_clean(host, work, args.keep)
    report(args, mwm_estimated, results, host, stopped, problems)


# --- the report -------------------------------------------------------------------------------


def met(condition: bool) -> str:
    return "met" if condition else "MISSED"


def report(args, mwm_estimated: bool, results: dict, host, stopped, problems) -> None:
    def row(name: str, value: object) -> None:
        print(f"  {name:<66} {value}")

    def mib(size: float) -> str:
        return f"{size / 2**20:,.0f} MiB"

    def loads(values) -> str:
        return " / ".join(f"{value:.2f}" for value in values)

    loaded = results["load"]
    analyzers = [name for name in ANALYZERS if f"build_{name}" in loaded]
    print("\n== soundspan vibe API at scale ==")
    print(
        f"  {sys.executable} bench/scale.py --tracks {args.tracks} --requests {args.requests}"
        f" --recall-sources {args.recall_sources} --chunk {args.chunk}"
        f"{' --musicnn-only' if args.musicnn_only else ''}"
    )
    memory = psutil.virtual_memory().total
    row("machine: nproc; memory", f"{os.cpu_count()}; {memory / 2**30:.1f} GiB")
    row(
        "load average 1/5/15 min at start; before the HTTP part",
        f"{loads(results['load_at_start'])}; {loads(results['load_before_http'])}",
    )
    row(
        "time: host start; to loaded (+ recall); to HTTP done; whole run",
        f"{results['startup_s']:.0f}; {results['loaded_at_s']:.0f}; {results['http_at_s']:.0f};"
        f" {results['total_s']:.0f} s",
    )
    row(
        f"COPY of {args.tracks} tracks ({', '.join(analyzers)}), ANALYZE",
        f"{loaded['copy_s']:.1f} s",
    )
    settings = loaded["settings"]
    chosen = "estimated from the vectors" if mwm_estimated else "--mwm-mib"
    row("maintenance_work_mem", f"{settings['maintenance_work_mem']} ({chosen})")
    row(
        "max_parallel_maintenance_workers; shared_buffers; DSM type",
        f"{settings['max_parallel_maintenance_workers']} (PostgreSQL's default, as api.py);"
        f" {settings['shared_buffers']}; {settings['dynamic_shared_memory_type']}",
    )
    sizes = loaded["sizes"]
    for analyzer in analyzers:
        build = loaded[f"build_{analyzer}"]
        index = sizes[f"{analyzer}_results_embedding"][0]
        row(
            f"HNSW build, {analyzer} ({DIMENSIONS[analyzer]}-d): time; index size",
            f"{build['s']:.1f} s; {mib(index)}",
        )
        row(
            "  peak RSS: backend; parallel workers (summed); MemAvailable fall",
            f"{build['backend']:,.0f}; {build['parallel workers']:,.0f};"
            f" {build['available_fall']:,.0f} MiB",
        )
        row("  graph in memory throughout", "yes" if not build["notices"] else build["notices"])
    for table in TABLES:
        if table in sizes:
            main, total = sizes[table]
            row(f"table {table}: heap; with TOAST and indexes", f"{mib(main)}; {mib(total)}")
    row(
        "database size (pg_database_size); data directory on disk",
        f"{mib(loaded['database'])}; {mib(loaded['data_dir'])}",
    )
    for analyzer in analyzers:
        recall = loaded[f"recall_{analyzer}"]
        row(
            f"recall@10, {analyzer} ({args.recall_sources} sources): mean; min; exact p50",
            f"{recall['recall']:.3f} ({met(recall['recall'] >= 0.95)}); {recall['min']:.1f};"
            f" {recall['exact_ms']:.0f} ms",
        )
    titles = {
        "similar": "GET /api/vibe/similar/{{id}}?analyzer={}&limit={}",
        "search": "POST /api/vibe/search (tiny random CLAP), limit {1}",
        "path": "GET /api/vibe/path?analyzer={}&length={}",
    }
    for (route, analyzer, size), values in results["cases"]:
        row(
            titles[route].format(analyzer, size),
            f"p50 {values['p50_ms']:.1f}, p99 {values['p99_ms']:.1f}, max {values['max_ms']:.1f}"
            f" ms (n={values['n']}); sizes {values['sizes']}",
        )
        if route == "similar":
            goal = values["p50_ms"] <= 20 and values["p99_ms"] <= 100
            row("  goal p50 <= 20 ms, p99 <= 100 ms", met(goal))
    report_map(row, results)
    peaks = results["postgres"]
    row(
        "PostgreSQL, whole run: peak RSS of its largest process; of all",
        f"{peaks['largest process']:,.0f}; {peaks['all']:,.0f} MiB (shared memory counted in each)",
    )
    row("  lowest MemAvailable (fall from the host's start)", f"{peaks['available_fall']:,.0f} MiB")
    report_host_end(row, host, stopped, problems)


def report_map(row, results: dict) -> None:
    answer = results["map"]
    logged = next(line for line in results["map_lines"] if line["analyzer"] == "musicnn")
    row(
        "GET /api/vibe/map?analyzer=musicnn: first request; host log",
        f"{answer['s']:.1f} s; {logged['s']:.1f} s ({logged['points']} by {logged['method']})",
    )
    row(
        "  size; labelled points",
        f"{answer['bytes'] / 1e6:.1f} MB; {answer['labelled']} of {answer['points']}",
    )
    cpu = answer["cpu"]
    row("  CPU during it: host / PostgreSQL", f"{cpu['host']:.1f} / {cpu['postgres']:.1f} s")
    row(
        "  host RSS before / peak during / after",
        f"{answer['rss_before'] / 2**20:,.0f} / {answer['rss_peak'] / 2**20:,.0f} /"
        f" {answer['rss_after'] / 2**20:,.0f} MiB",
    )
    for pid, spawned in answer["spawned"].items():
        row(
            f"  spawned process {pid} (the map's own): peak RSS; CPU",
            f"{spawned['rss_peak'] / 2**20:,.0f} MiB; {spawned['cpu']:.1f} s",
        )
    start, end = answer["window"]
    during, outside = [], []
    for wall, seconds, _ in answer["similar"]:
        (during if wall <= end and start <= wall + seconds else outside).append(seconds)
    for name, values in (("overlapping the map request", during), ("not overlapping", outside)):
        if values:
            slow = sum(1000 * value > SLOW_MS for value in values)
            row(
                f"similar musicnn limit 20 beside it, {name}",
                f"p50 {1000 * percentile(values, 0.5):.0f}, p99"
                f" {1000 * percentile(values, 0.99):.0f}, max {1000 * max(values):.0f} ms;"
                f" {slow} of {len(values)} over {SLOW_MS} ms",
            )


if __name__ == "__main__":
    main()
