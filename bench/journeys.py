"""Vibe journeys benchmark (issue 10): path, mix and the library map over HTTP at 100,000 tracks.

The host and the library are bench/api.py's: the real host (embedded PostgreSQL + pgvector)
with the watcher off, `[musicnn]` and `[clap]` enabled with `workers = 0` (their migrations
create `musicnn_results` 200-d and `clap_results` 512-d), `[clap] model` a tiny random CLAP, and
N synthetic tracks (default 100,000) COPY'd straight into the database with both analyses
(embeddings around 500 gaussian clusters; musicnn tag probabilities over the real MSD tags, so
the map's genre labels are computed as for a real library). `[vibe_api] map_refresh_seconds`
is set to `--refresh-seconds` (default 10; the setting's default is 60).

Measured over HTTP from a load generator in a separate process (aiohttp client), in order:
  * GET /api/vibe/path?from=&to=&length=12&analyzer=musicnn|clap, random pairs, one at a time:
    p50/p99 (no map asked for yet: nothing else runs in the host);
  * POST /api/vibe/mix, 2 random tracks added and 1 subtracted, per analyzer: p50/p99;
  * GET /api/vibe/map?analyzer=clap, then musicnn: the first request (a full computation:
    PCA in two streaming passes, labels, JSON) with the host's CPU and PostgreSQL's CPU spent
    and the host process's peak RSS during it, the host's own log line ("vibe map of clap: N
    tracks by pca in T s"), then warm requests (the cached JSON) and the answer's size;
  * the refresh: `--extra` more tracks (default 1,000) COPY'd in; each map polled every second
    until it shows them, while path requests run one at a time beside the polls. The host log's
    timestamps split the wait into "until the next refresh tick" and "the recompute", and the
    path requests that overlapped a recompute are reported apart.
Then, with the host idle, the map's parts are timed in this process with the plugins' own
functions on the same database (the two streaming passes, the labels hook, the JSON) to show
where the map's time goes.

Run from the repository root (2 cores; about 10 minutes at 100,000 tracks):

    .venv/bin/python bench/journeys.py [--tracks 100000] [--requests 300] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import re
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import asyncpg
import psutil
from api import (
    api_environment,
    copy_tracks,
    load_library,
    percentile,
    report_host_end,
    stop_and_clean,
    track_id,
)
from common import BenchHost, MemorySampler
from pgvector.asyncpg import register_vector

from soundspan_plugins.musicnn.tags import MSD_TAGS

ANALYZERS = ("musicnn", "clap")
PATH_LENGTH = 12
WARM_MAP_REQUESTS = 10
WARM_UP_REQUESTS = 10
QUIET_LOAD = 1.5
QUIET_WAIT_S = 900
MAP_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO \S+: vibe map of (\w+): (\d+) tracks by"
    r" (\w+) in ([\d.]+) s$"
)


# --- the load generator (its own process, driven by commands) ----------------------------------


def latency_summary(samples: list[tuple[float, float, int]]) -> dict:
    """p50/p99/max of timed requests (wall time at start, seconds, answer size); their sizes."""
    times = [seconds for _, seconds, _ in samples]
    sizes = [size for _, _, size in samples]
    return {
        "p50_ms": 1000 * percentile(times, 0.5),
        "p99_ms": 1000 * percentile(times, 0.99),
        "max_ms": 1000 * max(times),
        "n": len(samples),
        "sizes": (min(sizes), max(sizes)),
    }


class Client:
    """What the load generator can be asked to do, each an HTTP measurement."""

    def __init__(self, session, count: int) -> None:
        self.session = session
        self.count = count
        self.rng = random.Random(11)

    async def _get(self, path: str, **params: str) -> bytes:
        async with self.session.get(path, params=params) as answer:
            body = await answer.read()
            if answer.status != 200:
                raise RuntimeError(f"GET {path} {params} answered {answer.status}: {body[:200]}")
            return body

    async def _timed_path(self, analyzer: str) -> tuple[float, float, int]:
        """(wall time at start, seconds, steps) of one path between two random tracks."""
        start, end = self.rng.sample(range(self.count), 2)
        wall, started = time.time(), time.perf_counter()
        body = await self._get(
            "/api/vibe/path",
            **{"from": track_id(start), "to": track_id(end)},
            length=str(PATH_LENGTH),
            analyzer=analyzer,
        )
        return wall, time.perf_counter() - started, len(json.loads(body)["steps"])

    async def _timed_mix(self, analyzer: str) -> tuple[float, float, int]:
        first, second, third = (track_id(i) for i in self.rng.sample(range(self.count), 3))
        request = {"add": [first, second], "subtract": [third], "analyzer": analyzer}
        wall, started = time.time(), time.perf_counter()
        async with self.session.post("/api/vibe/mix", json=request) as answer:
            body = await answer.read()
            if answer.status != 200:
                raise RuntimeError(f"POST /api/vibe/mix answered {answer.status}: {body[:200]}")
        return wall, time.perf_counter() - started, len(json.loads(body)["results"])

    async def latencies(self, route: str, analyzer: str, requests: int) -> dict:
        """One request at a time, after a few to warm up: p50/p99 and the answers' sizes."""
        timed = self._timed_path if route == "path" else self._timed_mix
        for _ in range(WARM_UP_REQUESTS):
            await timed(analyzer)
        return latency_summary([await timed(analyzer) for _ in range(requests)])

    async def map(self, analyzer: str) -> dict:
        started = time.perf_counter()
        body = await self._get("/api/vibe/map", analyzer=analyzer)
        seconds = time.perf_counter() - started
        answer = json.loads(body)
        labelled = sum(point["label"] is not None for point in answer["points"])
        return {
            "s": seconds,
            "bytes": len(body),
            "points": len(answer["points"]),
            "labelled": labelled,
            "method": answer["method"],
        }

    async def warm_map(self, analyzer: str, requests: int) -> dict:
        times = []
        for _ in range(requests):
            started = time.perf_counter()
            await self._get("/api/vibe/map", analyzer=analyzer)
            times.append(time.perf_counter() - started)
        return {"p50_ms": 1000 * percentile(times, 0.5), "max_ms": 1000 * max(times)}

    async def wait_for_map(self, analyzer: str, points: int, timeout: float) -> dict:
        """Poll the map every second until it has `points` points; path requests (clap) run
        one at a time beside the polls. Returns when it was seen, and the path timings."""
        deadline = time.monotonic() + timeout
        paths: list[tuple[float, float]] = []
        seen = asyncio.Event()

        async def paths_beside() -> None:
            while not seen.is_set():
                wall, seconds, _ = await self._timed_path("clap")
                paths.append((wall, seconds))

        beside = asyncio.create_task(paths_beside())
        polls = 0
        try:
            while time.monotonic() < deadline:
                body = await self._get("/api/vibe/map", analyzer=analyzer)
                polls += 1
                if body.count(b'"id": ') >= points:
                    seen.set()
                    return {"seen_at": time.time(), "polls": polls, "paths": paths}
                await asyncio.sleep(1.0)
            raise RuntimeError(f"the {analyzer} map did not show {points} points in {timeout} s")
        finally:
            seen.set()
            await beside


async def _serve(base: str, count: int, commands, answers, client_class: type[Client]) -> None:
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=1800)
    async with aiohttp.ClientSession(base, timeout=timeout) as session:
        client = client_class(session, count)
        while (command := await asyncio.to_thread(commands.get)) is not None:
            name, arguments = command
            try:
                answers.put(("ok", await getattr(client, name)(**arguments)))
            except Exception as error:  # reported in the parent, which stops the run
                answers.put(("error", f"{name}: {error!r}"))


def client_process(base: str, count: int, commands, answers, client_class=Client) -> None:
    asyncio.run(_serve(base, count, commands, answers, client_class))


class LoadGenerator:
    """The client process, asked one measurement at a time (`client_class`'s methods)."""

    def __init__(self, base: str, count: int, client_class: type[Client] = Client) -> None:
        context = multiprocessing.get_context("spawn")
        self.commands = context.Queue()
        self.answers = context.Queue()
        self.process = context.Process(
            target=client_process, args=(base, count, self.commands, self.answers, client_class)
        )
        self.process.start()

    def ask(self, name: str, **arguments):
        self.commands.put((name, arguments))
        state, answer = self.answers.get(timeout=3600)
        if state != "ok":
            raise RuntimeError(f"load generator: {answer}")
        return answer

    def close(self) -> None:
        self.commands.put(None)
        self.process.join(30)


# --- the run ------------------------------------------------------------------------------------


def wait_for_quiet() -> tuple[float, float, float]:
    """Wait (up to QUIET_WAIT_S) for the 1-minute load average to drop to QUIET_LOAD."""
    waited = 0
    while os.getloadavg()[0] > QUIET_LOAD and waited < QUIET_WAIT_S:
        print(f"load average {os.getloadavg()[0]:.2f} > {QUIET_LOAD}: waiting", file=sys.stderr)
        time.sleep(60)
        waited += 60
    return os.getloadavg()


async def load(host: BenchHost, count: int) -> dict:
    db = await asyncpg.connect(host.database_url)
    try:
        await register_vector(db)
        return await load_library(db, count, MSD_TAGS)
    finally:
        await db.close()


async def add_tracks(host: BenchHost, first: int, count: int) -> None:
    db = await asyncpg.connect(host.database_url)
    try:
        await register_vector(db)
        await copy_tracks(db, first, count, MSD_TAGS)
    finally:
        await db.close()


def map_lines(host: BenchHost) -> list[dict]:
    """The host log's "vibe map of ..." lines: when each computation ended, and its seconds."""
    found = []
    for line in host.log_path.read_text(errors="replace").splitlines():
        match = MAP_LINE.match(line)
        if match:
            stamp, analyzer, points, method, seconds = match.groups()
            ended = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
            found.append(
                {
                    "analyzer": analyzer,
                    "points": int(points),
                    "method": method,
                    "s": float(seconds),
                    "ended": ended,
                    "started": ended - float(seconds),
                }
            )
    return found


def cold_map(
    host: BenchHost, generator: LoadGenerator, analyzer: str, command: str = "map", **arguments
) -> dict:
    """The first map request (the load generator's `command`, a dict with the map's answer),
    with the host's peak RSS and the CPU spent during it."""
    process = psutil.Process(host.process.pid)
    rss_before = process.memory_info().rss
    sampler = MemorySampler(host.process.pid)
    sampler.start()
    cpu_before = host.cpu_seconds()
    answer = generator.ask(command, analyzer=analyzer, **arguments)
    cpu_after = host.cpu_seconds()
    sampler.stopping.set()
    sampler.join()
    answer["rss_before"] = rss_before
    answer["rss_peak"] = max(sampler.peak, process.memory_info().rss)
    answer["rss_after"] = process.memory_info().rss
    answer["cpu"] = {name: cpu_after[name] - cpu_before[name] for name in cpu_after}
    return answer


def refresh(host: BenchHost, generator: LoadGenerator, count: int, extra: int, timeout: float):
    """COPY `extra` tracks in; when each map shows them, split by the host log's timestamps."""
    before = len(map_lines(host))
    started = time.time()
    asyncio.run(add_tracks(host, count, extra))
    inserted = time.time()
    seen = {
        analyzer: generator.ask(
            "wait_for_map", analyzer=analyzer, points=count + extra, timeout=timeout
        )
        for analyzer in ("clap", "musicnn")
    }
    recomputed = {line["analyzer"]: line for line in map_lines(host)[before:]}
    return {"copy_s": inserted - started, "inserted": inserted, "seen": seen, "lines": recomputed}


async def map_parts(host: BenchHost, table: str, labels: bool) -> dict:
    """The map's steps timed one by one with the plugins' own code, in this process."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from soundspan_plugins.musicnn.analyzer import MusicnnAnalyzer
    from soundspan_plugins.vibe_api import map_process, queries
    from soundspan_plugins.vibe_api.exclusions import NOTHING_EXCLUDED

    engine = create_async_engine(host.database_url.replace("postgresql:", "postgresql+asyncpg:"))
    stub = SimpleNamespace(engine=engine)
    parts: dict[str, float] = {}
    try:
        started = time.perf_counter()
        await queries.embeddings_signature(engine, table)
        parts["signature"] = time.perf_counter() - started
        started = time.perf_counter()
        rows = 0
        async for tracks, _, _ in queries.present_embeddings(engine, table):
            rows += len(tracks)
        parts["one streaming pass"] = time.perf_counter() - started
        started = time.perf_counter()
        track_ids, content_ids, coordinates = await map_process.pca(engine, table, NOTHING_EXCLUDED)
        parts["pca (two passes + eigh)"] = time.perf_counter() - started
        if labels:
            started = time.perf_counter()
            found = await MusicnnAnalyzer(stub).content_labels(content_ids)
            parts["labels hook (musicnn genre)"] = time.perf_counter() - started
        else:
            found = {}
        started = time.perf_counter()
        points = [
            {"id": track, "x": x, "y": y, "label": found.get(content)}
            for track, content, (x, y) in zip(
                track_ids, content_ids, map_process.fit_square(coordinates).tolist(), strict=True
            )
        ]
        json.dumps({"points": points}).encode()
        parts["points + json.dumps"] = time.perf_counter() - started
    finally:
        await engine.dispose()
    return parts


def main() -> None:
    # torch is imported here, not at module level: the load generator processes re-import
    # this module and need none of it
    from random_clap import save_tiny_clap

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=300, help="sequential requests per route")
    parser.add_argument("--extra", type=int, default=1000, help="tracks added for the refresh")
    parser.add_argument("--refresh-seconds", type=float, default=10.0)
    parser.add_argument("--keep", action="store_true", help="keep the work dir (and its log)")
    args = parser.parse_args()

    load_at_start = wait_for_quiet()
    work = Path(tempfile.mkdtemp(prefix="soundspan-journeys-bench-"))
    (work / "music").mkdir()
    env = api_environment(work, save_tiny_clap(work / "tiny-clap", projection_dim=512))
    env["SOUNDSPAN_VIBE_API__MAP_REFRESH_SECONDS"] = str(args.refresh_seconds)
    host = BenchHost(work, env)
    results: dict = {"load_at_start": load_at_start}
    generator = None
    try:
        results["startup_s"] = host.start()
        host.wait_for_models()
        print(f"loading {args.tracks} tracks ...", file=sys.stderr)
        results["timings"] = asyncio.run(load(host, args.tracks))
        results["load_before_http"] = os.getloadavg()
        generator = LoadGenerator(host.url(""), args.tracks)
        for route in ("path", "mix"):
            for analyzer in ANALYZERS:
                print(f"{route} {analyzer} ...", file=sys.stderr)
                requests = args.requests if route == "path" else max(args.requests // 2, 50)
                results[f"{route}_{analyzer}"] = generator.ask(
                    "latencies", route=route, analyzer=analyzer, requests=requests
                )
        for analyzer in ("clap", "musicnn"):
            print(f"map {analyzer} ...", file=sys.stderr)
            results[f"map_{analyzer}"] = cold_map(host, generator, analyzer)
            results[f"map_{analyzer}"]["warm"] = generator.ask(
                "warm_map", analyzer=analyzer, requests=WARM_MAP_REQUESTS
            )
        results["cold_lines"] = map_lines(host)
        print(f"refresh: {args.extra} more tracks ...", file=sys.stderr)
        results["refresh"] = refresh(
            host, generator, args.tracks, args.extra, timeout=10 * args.refresh_seconds + 600
        )
        print("the map's parts, in this process ...", file=sys.stderr)
        results["parts"] = {
            analyzer: asyncio.run(map_parts(host, f"{analyzer}_results", labels=True))
            for analyzer in ("clap", "musicnn")
        }
    except BaseException:
        print(f"host log tail:\n{host.tail()}", file=sys.stderr)
        raise
    finally:
        if generator is not None:
            generator.close()
        stopped, problems = stop_and_clean(host, work, args.keep)
    report(args, results, host, stopped, problems)


def report(args, results: dict, host: BenchHost, stopped, problems) -> None:
    def row(name: str, value: object) -> None:
        print(f"  {name:<58} {value}")

    def loads(values) -> str:
        return " / ".join(f"{value:.2f}" for value in values)

    print("\n== soundspan vibe journeys benchmark ==")
    print(
        f"  {sys.executable} bench/journeys.py --tracks {args.tracks} --requests {args.requests}"
        f" --extra {args.extra} --refresh-seconds {args.refresh_seconds:g}"
    )
    row(
        "load average 1/5/15 min at start; before the HTTP part",
        f"{loads(results['load_at_start'])}; {loads(results['load_before_http'])}",
    )
    row("host start (to /healthz)", f"{results['startup_s']:.1f} s")
    timings = results["timings"]
    builds = ", ".join(f"{timings[f'hnsw_{name}_results_s']:.1f} s" for name in ANALYZERS)
    row("COPY of the library, ANALYZE; HNSW builds", f"{timings['copy_s']:.1f} s; {builds}")
    for route, title in (
        ("path", f"GET /api/vibe/path length {PATH_LENGTH}"),
        ("mix", "POST /api/vibe/mix 2 added, 1 subtracted"),
    ):
        for analyzer in ANALYZERS:
            values = results[f"{route}_{analyzer}"]
            row(
                f"{title}, {analyzer}",
                f"p50 {values['p50_ms']:.1f} ms, p99 {values['p99_ms']:.1f} ms, max "
                f"{values['max_ms']:.1f} ms (n={values['n']}); answer sizes {values['sizes']}",
            )
    lines = results["cold_lines"]
    for analyzer in ("clap", "musicnn"):
        values = results[f"map_{analyzer}"]
        logged = next(line for line in lines if line["analyzer"] == analyzer)
        row(
            f"GET /api/vibe/map {analyzer}: first request; host log",
            f"{values['s']:.1f} s; {logged['s']:.1f} s ({logged['points']} by {logged['method']})",
        )
        row(
            "  warm request p50 / max; size; labelled points",
            f"{values['warm']['p50_ms']:.0f} / {values['warm']['max_ms']:.0f} ms;"
            f" {values['bytes'] / 1e6:.1f} MB; {values['labelled']} of {values['points']}",
        )
        cpu = values["cpu"]
        row(
            "  CPU during it: host / PostgreSQL / bench script",
            f"{cpu['host']:.1f} / {cpu['postgres']:.1f} / {cpu['bench']:.1f} s",
        )
        row(
            "  host RSS before / peak during / after",
            f"{values['rss_before'] / 2**20:.0f} / {values['rss_peak'] / 2**20:.0f} /"
            f" {values['rss_after'] / 2**20:.0f} MiB",
        )
    refreshed = results["refresh"]
    row(
        f"refresh: COPY of {args.extra} more tracks (HNSW indexes in place)",
        f"{refreshed['copy_s']:.1f} s",
    )
    for analyzer in ("clap", "musicnn"):
        seen = refreshed["seen"][analyzer]
        line = refreshed["lines"].get(analyzer)
        waited = seen["seen_at"] - refreshed["inserted"]
        if line is None:
            row(f"refresh {analyzer}: COPY done -> map shows them", f"{waited:.1f} s (no log line)")
            continue
        row(
            f"refresh {analyzer}: COPY done -> shown (tick wait + recompute + poll)",
            f"{waited:.1f} s = {line['started'] - refreshed['inserted']:.1f} + {line['s']:.1f}"
            f" + {seen['seen_at'] - line['ended']:.1f} s ({line['points']} points)",
        )
    windows = [(line["started"], line["ended"]) for line in refreshed["lines"].values()]
    during, outside = [], []
    for seen in refreshed["seen"].values():
        for wall, seconds in seen["paths"]:
            overlaps = any(start <= wall + seconds and wall <= end for start, end in windows)
            (during if overlaps else outside).append(seconds)
    for name, values in (("overlapping a recompute", during), ("not overlapping", outside)):
        if values:
            row(
                f"path clap beside the polls, {name}",
                f"p50 {1000 * percentile(values, 0.5):.0f} ms, p99"
                f" {1000 * percentile(values, 0.99):.0f} ms, max {1000 * max(values):.0f} ms;"
                f" {sum(value > 0.2 for value in values)} of {len(values)} over 200 ms",
            )
    for analyzer, parts in results["parts"].items():
        row(
            f"map parts in this process, {analyzer}",
            ", ".join(f"{part} {seconds:.2f} s" for part, seconds in parts.items()),
        )
    report_host_end(row, host, stopped, problems)


if __name__ == "__main__":
    main()
