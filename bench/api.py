"""Vibe API benchmark (issue 5): similar-track and search latency over HTTP at 100,000 tracks.

It starts the real host (`soundspan-host serve`, embedded PostgreSQL + pgvector) in a
temporary folder with no analysis running: the watcher disabled, `[musicnn]` and `[clap]`
enabled with `workers = 0` (their migrations create `musicnn_results` and `clap_results`, no
worker process starts), `[clap] model` pointing at a TINY RANDOM CLAP (random weights,
projection_dim 512, a toy tokenizer; saved with the untrained marker) so that the text tower
answers POST /api/vibe/search on CPU. Its search *results* mean nothing; its timing is that
of a tiny model, not of larger_clap_music's RoBERTa-base (see bench/clap.py for that size).

Then it loads N synthetic tracks (default 100,000) straight into the database with asyncpg
COPY: contents, tracks, analysis_jobs ('done' for both analyzers), musicnn_results (200-d)
and clap_results (512-d). Embeddings are clustered (500 gaussian clusters, unit-normalised),
so neighbours are meaningful. The HNSW indexes of the migrations are dropped before the load
and built again after it (same definition), and the build time is reported.

Measured over HTTP, from a load generator in a separate process (aiohttp client):
  * GET /api/vibe/similar/{id}?analyzer=musicnn and ?analyzer=clap, random ids: p50/p99 one
    request at a time, and throughput with 8 requests in flight;
  * POST /api/vibe/search (tiny CLAP text tower) p50/p99;
  * GET /api/tracks/{id} p50/p99 and throughput.
And recall@10 of the query the API runs (HNSW, `hnsw.iterative_scan = relaxed_order`, the
API's ef_search) against the exact answer (same query with index scans off) for 200 random sources.

Run from the repository root (about 5 to 10 minutes; 2 cores):

    .venv/bin/python bench/api.py [--tracks 100000] [--requests 2000] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import random
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import asyncpg
import numpy as np
from common import BenchHost, host_environment, remove_work
from pgvector.asyncpg import register_vector

from soundspan_plugins.vibe_api import queries

ANALYZERS = ("musicnn", "clap")
# the API's HNSW candidate list; pgvector's default (40) in the commits before it set one, so
# that this file also measures them side by side
API_EF_SEARCH = getattr(queries, "EF_SEARCH", 40)
CLUSTERS = 500
RECALL_SOURCES = 200
CONCURRENCY = 8
THROUGHPUT_SECONDS = 10.0
SEARCH_TEXTS = [
    "rainy night jazz piano",
    "distorted guitar riff",
    "calm ambient drone with rain",
    "fast drum and bass",
    "warm analog synth pads",
]
MUSICNN_TAGS = [f"tag{index}" for index in range(50)]


# --- the host ---------------------------------------------------------------------------------


def api_environment(work: Path, clap_model: Path) -> dict:
    """Only the vibe API, musicnn and clap (both with no workers) enabled."""
    return host_environment(
        work,
        {"vibe_api", "musicnn", "clap"},
        SOUNDSPAN_MUSICNN__WORKERS="0",
        SOUNDSPAN_CLAP__WORKERS="0",
        SOUNDSPAN_CLAP__MODEL=str(clap_model),
    )


# --- loading the library ----------------------------------------------------------------------


def clustered(count: int, dimension: int, seed: int, centres_seed: int | None = None) -> np.ndarray:
    """`count` unit vectors around CLUSTERS random centres (noise 0.6 of a centre's length);
    the centres drawn from `centres_seed` if given, so that chunks can share them."""
    rng = np.random.default_rng(seed)
    centres_rng = rng if centres_seed is None else np.random.default_rng(centres_seed)
    centres = centres_rng.standard_normal((CLUSTERS, dimension)).astype(np.float32)
    members = rng.integers(0, CLUSTERS, count)
    vectors = centres[members] + 0.6 * rng.standard_normal((count, dimension), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def track_id(index: int) -> str:
    """32 hex digits, like the host's uuid4 ids (POST /api/vibe/mix tells track ids from texts
    by that form); the leading b keeps them apart from content ids."""
    return f"b{index:031x}"


def content_id(index: int) -> str:
    return f"{index:032x}"


async def copy_tracks(
    db: asyncpg.Connection,
    first: int,
    count: int,
    tags: Sequence[str] = MUSICNN_TAGS,
    analyzers: Sequence[str] = ANALYZERS,
    shared_centres: bool = False,
) -> None:
    """COPY tracks `first` .. `first + count - 1`, each its own content, the `analyzers`'
    analyses done (musicnn tag probabilities over `tags`, the embeddings). With
    `shared_centres`, the clusters do not depend on `first`: chunks of one library share them."""
    now = time.time()
    indexes = range(first, first + count)
    await db.copy_records_to_table(
        "contents", records=((content_id(i), 4_000_000 + i) for i in indexes),
        columns=["id", "size"],
    )  # fmt: skip
    await db.copy_records_to_table(
        "tracks",
        records=(
            (
                track_id(i),
                f"Artist {i // 100}/Album {i // 10}/{i:07d} Song.mp3".encode(),
                f"Artist {i // 100}/Album {i // 10}/{i:07d} Song.mp3",
                content_id(i),
                4_000_000 + i,
                now,
                f"Song {i}",
                f"Artist {i // 100}",
                f"Album {i // 10}",
                240.0,
            )
            for i in indexes
        ),
        columns=[
            "id", "raw_path", "path", "content_id", "size", "mtime",
            "title", "artist", "album", "duration",
        ],
    )  # fmt: skip
    for analyzer in analyzers:
        await db.execute(
            "INSERT INTO analysis_jobs (content_id, analyzer, version, state, attempts,"
            " finished_at) SELECT id, $1, 'bench', 'done', 1, now() FROM contents"
            " WHERE id >= $2 AND id < $3",  # content ids are zero-padded: ordered as numbers
            analyzer,
            content_id(first),
            content_id(first + count),
        )
    if "musicnn" in analyzers:
        await copy_musicnn(db, first, count, tags, shared_centres)
    if "clap" in analyzers:
        clap = clustered(count, 512, seed=2 + first, centres_seed=2 if shared_centres else None)
        await db.copy_records_to_table(
            "clap_results",
            records=((content_id(i), "bench", "bench", clap[i - first], 24) for i in indexes),
            columns=["content_id", "model_id", "version", "embedding", "windows"],
        )


async def copy_musicnn(
    db: asyncpg.Connection, first: int, count: int, tags: Sequence[str], shared_centres: bool
) -> None:
    """COPY the MusiCNN results of tracks `first` .. `first + count - 1` (see copy_tracks)."""
    indexes = range(first, first + count)
    rng = np.random.default_rng(7 + first)
    probabilities = rng.random((count, len(tags))).astype(np.float32) * 0.5
    musicnn = clustered(count, 200, seed=1 + first, centres_seed=1 if shared_centres else None)
    top_tags = json.dumps([[tags[0], 0.5]])
    tags_json = (
        json.dumps(dict(zip(tags, map(float, row), strict=True))) for row in probabilities.round(4)
    )
    await db.copy_records_to_table(
        "musicnn_results",
        records=(
            (content_id(i), "MSD_musicnn", "bench", probabilities_json, top_tags,
             musicnn[i - first], 80)
            for i, probabilities_json in zip(indexes, tags_json, strict=True)
        ),
        columns=["content_id", "model_id", "version", "tags", "top_tags", "embedding", "patches"],
    )  # fmt: skip


async def load_library(
    db: asyncpg.Connection, count: int, tags: Sequence[str] = MUSICNN_TAGS
) -> dict[str, float]:
    """COPY `count` tracks with both analyses; drop and rebuild the HNSW indexes (timed)."""
    timings = {"copy_s": await copy_library(db, count, tags)}
    await db.execute("SET maintenance_work_mem = '2GB'")
    for table in ("musicnn_results", "clap_results"):
        timings[f"hnsw_{table}_s"] = await build_index(db, table)
    await db.execute("ANALYZE")
    return timings


async def copy_library(
    db: asyncpg.Connection,
    count: int,
    tags: Sequence[str] = MUSICNN_TAGS,
    analyzers: Sequence[str] = ANALYZERS,
    chunk: int | None = None,
) -> float:
    """Drop the HNSW indexes, COPY `count` tracks with the `analyzers`' analyses (`chunk`
    tracks at a time, sharing their clusters, if given: memory for one chunk, not all), and
    ANALYZE; returns the seconds taken."""
    started = time.monotonic()
    await db.execute("DROP INDEX IF EXISTS musicnn_results_embedding")
    await db.execute("DROP INDEX IF EXISTS clap_results_embedding")
    if chunk is None:
        await copy_tracks(db, 0, count, tags, analyzers)
    else:
        for first in range(0, count, chunk):
            size = min(chunk, count - first)
            await copy_tracks(db, first, size, tags, analyzers, shared_centres=True)
    await db.execute("ANALYZE")
    return time.monotonic() - started


async def build_index(db: asyncpg.Connection, table: str, options: str = "") -> float:
    """CREATE the migrations' HNSW index on `table` (`<analyzer>_results`), or one built with
    `options` (" WITH (m = 32, ...)"); the seconds taken."""
    started = time.monotonic()
    await db.execute(
        f"CREATE INDEX {table.removesuffix('_results')}_results_embedding ON {table}"
        f" USING hnsw (embedding vector_cosine_ops){options}"
    )
    return time.monotonic() - started


# --- recall -----------------------------------------------------------------------------------

NEAREST = """
SELECT e.content_id FROM {table} e WHERE e.content_id <> $2
AND EXISTS (SELECT 1 FROM tracks t WHERE t.content_id = e.content_id AND t.missing_since IS NULL)
ORDER BY e.embedding <=> $1 LIMIT $3
"""


async def recall_at_10(
    db: asyncpg.Connection, table: str, count: int, sources: int = RECALL_SOURCES
) -> dict[str, float]:
    """Mean overlap of the API's HNSW top 10 with the exact top 10, over random sources."""
    rng = random.Random(3)
    overlaps = []
    exact_times = []
    for _ in range(sources):
        source = content_id(rng.randrange(count))
        vector = await db.fetchval(f"SELECT embedding FROM {table} WHERE content_id = $1", source)
        async with db.transaction():
            await db.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            await db.execute(f"SET LOCAL hnsw.ef_search = {API_EF_SEARCH}")
            approximate = await db.fetch(NEAREST.format(table=table), vector, source, 10)
        async with db.transaction():
            await db.execute("SET LOCAL enable_indexscan = off")
            started = time.monotonic()
            exact = await db.fetch(NEAREST.format(table=table), vector, source, 10)
            exact_times.append(time.monotonic() - started)
        overlap = {row[0] for row in approximate} & {row[0] for row in exact}
        overlaps.append(len(overlap) / 10)
    return {
        "recall": sum(overlaps) / len(overlaps),
        "min": min(overlaps),
        "exact_ms": 1000 * sorted(exact_times)[len(exact_times) // 2],
    }


# --- the load generator (runs in its own process) ----------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)]


async def _client(base: str, count: int, requests: int) -> dict:
    import aiohttp

    rng = random.Random(5)
    timeout = aiohttp.ClientTimeout(total=60)
    results: dict = {}
    async with aiohttp.ClientSession(
        base, timeout=timeout, connector=aiohttp.TCPConnector(limit=CONCURRENCY)
    ) as session:

        def similar(analyzer: str):
            return ("GET", f"/api/vibe/similar/{track_id(rng.randrange(count))}", analyzer)

        def track():
            return ("GET", f"/api/tracks/{track_id(rng.randrange(count))}", None)

        def search():
            return ("POST", "/api/vibe/search", rng.choice(SEARCH_TEXTS))

        async def one(request) -> float:
            method, path, extra = request
            started = time.perf_counter()
            if method == "GET":
                params = {"analyzer": extra} if extra else None
                async with session.get(path, params=params) as answer:
                    await answer.read()
                    status = answer.status
            else:
                async with session.post(path, json={"text": extra, "limit": 20}) as answer:
                    body = await answer.json()
                    status = answer.status
                    results.setdefault("search_analyzer", body.get("analyzer"))
            if status != 200:
                raise RuntimeError(f"{method} {path} answered {status}")
            return time.perf_counter() - started

        async def sequential(make, n: int) -> dict:
            for _ in range(20):
                await one(make())
            times = [await one(make()) for _ in range(n)]
            return {
                "p50_ms": 1000 * percentile(times, 0.5),
                "p99_ms": 1000 * percentile(times, 0.99),
                "n": n,
            }

        async def throughput(make) -> float:
            done = 0
            deadline = time.perf_counter() + THROUGHPUT_SECONDS

            async def loop() -> None:
                nonlocal done
                while time.perf_counter() < deadline:
                    await one(make())
                    done += 1

            started = time.perf_counter()
            await asyncio.gather(*(loop() for _ in range(CONCURRENCY)))
            return done / (time.perf_counter() - started)

        for analyzer in ("musicnn", "clap"):
            make = lambda analyzer=analyzer: similar(analyzer)  # noqa: E731
            results[f"similar_{analyzer}"] = await sequential(make, requests)
            results[f"similar_{analyzer}"]["rps"] = await throughput(make)
        results["search"] = await sequential(search, max(requests // 4, 50))
        results["search"]["rps"] = await throughput(search)
        results["track"] = await sequential(track, requests)
        results["track"]["rps"] = await throughput(track)
    return results


def client_process(base: str, count: int, requests: int, queue) -> None:
    queue.put(asyncio.run(_client(base, count, requests)))


def run_client(base: str, count: int, requests: int) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=client_process, args=(base, count, requests, queue))
    process.start()
    results = queue.get(timeout=1800)
    process.join()
    return results


# --- the run ----------------------------------------------------------------------------------


async def prepare(host: BenchHost, count: int) -> tuple[dict, dict]:
    db = await asyncpg.connect(host.database_url)
    try:
        await register_vector(db)
        print(f"loading {count} tracks ...", file=sys.stderr)
        timings = await load_library(db, count)
        print("recall@10 ...", file=sys.stderr)
        recall = {table: await recall_at_10(db, table, count) for table in
                  ("musicnn_results", "clap_results")}  # fmt: skip
        sizes = {
            row["name"]: row["bytes"]
            for row in await db.fetch(
                "SELECT relname AS name, pg_relation_size(oid) AS bytes FROM pg_class"
                " WHERE relname IN ('musicnn_results_embedding', 'clap_results_embedding')"
            )
        }
        timings["index_mib"] = {name: size / 2**20 for name, size in sizes.items()}
        return timings, recall
    finally:
        await db.close()


def main() -> None:
    # torch is imported here, not at module level: the load generator processes re-import
    # this module and need none of it
    from random_clap import save_tiny_clap

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=2000, help="sequential requests per route")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (and its log)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="soundspan-api-bench-"))
    (work / "music").mkdir()
    host = BenchHost(
        work, api_environment(work, save_tiny_clap(work / "tiny-clap", projection_dim=512))
    )
    try:
        startup_s = host.start()
        host.wait_for_models()
        timings, recall = asyncio.run(prepare(host, args.tracks))
        print("load generator ...", file=sys.stderr)
        results = run_client(host.url(""), args.tracks, args.requests)
        with urllib.request.urlopen(host.url("/api/vibe/status"), timeout=10) as answer:
            status = json.load(answer)
    except BaseException:
        print(f"host log tail:\n{host.tail()}", file=sys.stderr)
        raise
    finally:
        stopped, problems = stop_and_clean(host, work, args.keep)
    report(args, startup_s, timings, recall, results, status, host, stopped, problems)


def stop_and_clean(host: BenchHost, work: Path, keep: bool) -> tuple[tuple, list[str]]:
    """Stop the host; its exit and its log's problems; the work dir removed unless kept."""
    stopped = host.stop()
    problems = host.problems()
    if keep:
        print(f"work dir kept: {work}", file=sys.stderr)
    else:
        remove_work(work)
    return stopped, problems


def report_host_end(row, host: BenchHost, stopped: tuple, problems: list[str]) -> None:
    """The report's last rows: the host's peak RSS, its stop, the problems in its log."""
    row("peak RSS of the host process", f"{host.memory.peak / 2**20:.0f} MiB")
    row("host stop (SIGTERM)", f"exit {stopped[0]} after {stopped[1]:.1f} s")
    row("WARNING/ERROR lines in the host log", len(problems))
    for line in problems[:10]:
        print(f"    {line}")


def report(args, startup_s, timings, recall, results, status, host, stopped, problems) -> None:
    def row(name: str, value: object) -> None:
        print(f"  {name:<50} {value}")

    print("\n== soundspan vibe API benchmark ==")
    print(f"  {sys.executable} bench/api.py --tracks {args.tracks} --requests {args.requests}")
    row("host start (to /healthz)", f"{startup_s:.1f} s")
    row("COPY of the library (both analyses), ANALYZE", f"{timings['copy_s']:.1f} s")
    for table in ("musicnn_results", "clap_results"):
        row(f"HNSW build, {table}", f"{timings[f'hnsw_{table}_s']:.1f} s")
    row("HNSW index sizes (MiB)", {k: round(v) for k, v in timings["index_mib"].items()})
    for table, values in recall.items():
        row(
            f"recall@10, {table} ({RECALL_SOURCES} sources)",
            f"{values['recall']:.3f} (min {values['min']:.1f}); exact query p50 "
            f"{values['exact_ms']:.0f} ms",
        )
    for key, title in (
        ("similar_musicnn", "GET /api/vibe/similar/{id}?analyzer=musicnn"),
        ("similar_clap", "GET /api/vibe/similar/{id}?analyzer=clap"),
        ("search", "POST /api/vibe/search (tiny random CLAP)"),
        ("track", "GET /api/tracks/{id}"),
    ):
        values = results[key]
        row(
            title,
            f"p50 {values['p50_ms']:.1f} ms, p99 {values['p99_ms']:.1f} ms (n={values['n']}); "
            f"{values['rps']:.0f} req/s with {CONCURRENCY} in flight",
        )
    row("search answered by", results.get("search_analyzer"))
    row(
        "analyzers (status)",
        [(a["name"], a["state"], a["trained"], a["counts"]["done"]) for a in status["analyzers"]],
    )
    report_host_end(row, host, stopped, problems)


if __name__ == "__main__":
    main()
