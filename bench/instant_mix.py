"""Instant Mix benchmark (issue 25): GET /api/similar_tracks with n=200, the request the
Navidrome AudioMuse-AI plugin sends, at 100,000 tracks, over HTTP.

The host and the library are bench/api.py's (its environment and its COPY loader: real host,
embedded PostgreSQL + pgvector, 100,000 synthetic tracks with clustered 200-d MusiCNN and
512-d CLAP embeddings, HNSW indexes rebuilt after the load), with `[subsonic]` and
`[instant_mix]` enabled too. No music server runs: the subsonic plugin's first refresh is a
day away, and its match table is filled straight in the database instead (`song-<track id>`
for every track, except every 20th track left unmatched, so answers must skip some tracks).

Measured from a load generator in its own process (aiohttp client), random seeds, one request
at a time, the cases taking turns (p50/p99 after 20 warm-up rounds; the library is vacuumed
and analyzed first, as autovacuum would do it later):
  * the Navidrome plugin's request: eliminate_duplicates=true (versions folded, caps), n=200;
  * the same with eliminate_duplicates=false (the plain nearest list), n=200;
  * the Navidrome plugin's request at n=20 (its Instant Mix asks for what the client wants);
  * bench/api.py's GET /api/vibe/similar/{id}?analyzer=musicnn (20 results, our ids) for the
    same seeds, whose p50 on a quiet machine is in RESULTS.md: a yardstick of the load.

With `--only CASE`, one case runs alone, and the CPU each request costs is printed: the host
process's, PostgreSQL's (all its processes) and the load generator's, from their CPU times
over the run (warm-ups included): what a request takes on a machine where they share cores.

With `--buffers 128,auto,auto,128`, the host restarts with each of these sizes of PostgreSQL's
cache in turn (embedded_database_shared_buffers_mb), its tables and indexes read into it first
(pg_prewarm), as a host that has served a while holds them.

Run from the repository root:

    .venv/bin/python bench/instant_mix.py [--tracks 100000] [--requests 1000] [--only CASE]
        [--buffers LIST] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
from api import api_environment, load_library, percentile, stop_and_clean
from common import BenchHost
from pgvector.asyncpg import register_vector

UNMATCHED_EVERY = 20
WARM_UP = 20
CASES = {
    "navidrome_n200": {"eliminate_duplicates": "true", "n": "200", "radius_similarity": "true"},
    "plain_n200": {"eliminate_duplicates": "false", "n": "200", "radius_similarity": "true"},
    "navidrome_n20": {"eliminate_duplicates": "true", "n": "20", "radius_similarity": "true"},
}
# issue 5's request (bench/api.py), measured beside them: how loaded the machine is
BASELINE = CASES["baseline"] = {"analyzer": "musicnn"}


def mix_environment(work: Path, clap_model: Path) -> dict:
    """bench/api.py's host, with subsonic (never calling its server) and instant_mix on."""
    env = api_environment(work, clap_model)
    env.update(
        SOUNDSPAN_SUBSONIC__ENABLED="true",
        SOUNDSPAN_SUBSONIC__URL="http://127.0.0.1:9",  # nothing listens; nothing calls it
        SOUNDSPAN_SUBSONIC__USERS='[{name="bench", password="bench"}]',
        SOUNDSPAN_SUBSONIC__CHANGE_DELAY_SECONDS="86400",
        SOUNDSPAN_SUBSONIC__REFRESH_SECONDS="86400",
        SOUNDSPAN_SUBSONIC__PLAYLISTS_ANALYSIS_DELAY_SECONDS="86400",
        SOUNDSPAN_INSTANT_MIX__ENABLED="true",
    )
    return env


async def fill_matches(db: asyncpg.Connection) -> int:
    """Every track matched to song `song-<track id>`, but every 20th left unmatched."""
    await db.execute(
        "INSERT INTO subsonic_matches (track_id, song_id, method, reason, track_updated_at,"
        " song_signature) SELECT id, CASE WHEN row_number() OVER (ORDER BY id)"
        f" % {UNMATCHED_EVERY} = 0 THEN NULL ELSE 'song-' || id END, 'path', NULL,"
        " updated_at, 'bench' FROM tracks"
    )
    await db.execute("ANALYZE subsonic_matches")
    return await db.fetchval("SELECT count(*) FROM subsonic_matches WHERE song_id IS NULL")


async def prepare(host: BenchHost, count: int) -> dict:
    db = await asyncpg.connect(host.database_url)
    try:
        await register_vector(db)
        print(f"loading {count} tracks ...", file=sys.stderr)
        timings = await load_library(db, count)
        timings["unmatched"] = await fill_matches(db)
        # what autovacuum would do to the freshly loaded tables under the first requests
        await db.execute("VACUUM ANALYZE")
        timings["matched_ids"] = [
            row[0]
            for row in await db.fetch(
                "SELECT song_id FROM subsonic_matches WHERE song_id IS NOT NULL"
            )
        ]
        return timings
    finally:
        await db.close()


async def _client(base: str, song_ids: list[str], requests: int, names: list[str]) -> dict:
    import aiohttp

    rng = random.Random(11)
    cases = {name: CASES[name] for name in names}  # a spawned process has them all
    results: dict = {"cpu_s": -time.process_time()}
    async with aiohttp.ClientSession(base, timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def one(params: dict) -> tuple[float, int]:
            song_id = rng.choice(song_ids)
            if params is BASELINE:  # the same seed's track by our id, through the vibe API
                where, query = f"/api/vibe/similar/{song_id.removeprefix('song-')}", params
            else:
                where, query = "/api/similar_tracks", {"item_id": song_id, **params}
            started = time.perf_counter()
            async with session.get(where, params=query) as answer:
                body = await answer.json()
                if answer.status != 200:
                    raise RuntimeError(f"{where} answered {answer.status}: {body}")
            elapsed = time.perf_counter() - started
            return elapsed, len(body["results"] if params is BASELINE else body)

        # the cases take turns, so that whatever else the machine does falls on all alike
        for _ in range(WARM_UP):
            for params in cases.values():
                await one(params)
        timed: dict[str, list[tuple[float, int]]] = {name: [] for name in cases}
        for _ in range(requests):
            for name, params in cases.items():
                timed[name].append(await one(params))
        for name, answers in timed.items():
            times = [seconds for seconds, _ in answers]
            results[name] = {
                "p50_ms": 1000 * percentile(times, 0.5),
                "p99_ms": 1000 * percentile(times, 0.99),
                "n": requests,
                "min_songs": min(songs for _, songs in answers),
            }
    results["cpu_s"] += time.process_time()
    return results


def client_process(base: str, song_ids: list[str], requests: int, names: list[str], queue) -> None:
    queue.put(asyncio.run(_client(base, song_ids, requests, names)))


def run_client(base: str, song_ids: list[str], requests: int) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(
        target=client_process, args=(base, song_ids, requests, list(CASES), queue)
    )
    process.start()
    results = queue.get(timeout=1800)
    process.join()
    return results


async def prewarm(host: BenchHost) -> str:
    """Read the tables and indexes a request reads into PostgreSQL's cache, as a host that has
    served a while holds them (pg_prewarm, a contrib module); returns the cache's size."""
    db = await asyncpg.connect(host.database_url)
    try:
        await db.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        await db.execute(
            "SELECT pg_prewarm(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid ="
            " c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i')"
            " AND c.relname ~ '^(tracks|musicnn_results|subsonic_matches)'"
        )
        return await db.fetchval("SHOW shared_buffers")
    finally:
        await db.close()


def measure(host: BenchHost, song_ids: list[str], requests: int) -> tuple[dict, dict]:
    """The cases' latencies, and the CPU each part of the machine spent on them."""
    host_before, database_before = host.cpu_seconds()["host"], host.database_cpu_seconds()
    results = run_client(host.url(""), song_ids, requests)
    database_after = host.database_cpu_seconds()  # backends that ended are left out
    cpu = {
        "host": host.cpu_seconds()["host"] - host_before,
        "postgres": sum(
            seconds - database_before.get(pid, 0.0) for pid, seconds in database_after.items()
        ),
        "load generator": results.pop("cpu_s"),
    }
    return results, cpu


def main() -> None:
    from random_clap import save_tiny_clap

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=1000, help="sequential requests per case")
    parser.add_argument("--only", choices=sorted(CASES), help="one case alone, with its CPU")
    parser.add_argument(
        "--buffers",
        help="PostgreSQL cache sizes to take turns, e.g. 128,auto,auto,128 (MB or auto): the "
        "host restarts with each, its cache prewarmed; default: the host's own, as loaded",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir (and its log)")
    args = parser.parse_args()
    if args.only:
        for name in set(CASES) - {args.only}:
            del CASES[name]

    work = Path(tempfile.mkdtemp(prefix="soundspan-instant-mix-bench-"))
    (work / "music").mkdir()
    clap = save_tiny_clap(work / "tiny-clap", projection_dim=512)
    host = BenchHost(work, mix_environment(work, clap))
    runs: list[tuple[str, dict, dict]] = []
    try:
        startup_s = host.start()
        host.wait_for_models()
        timings = asyncio.run(prepare(host, args.tracks))
        song_ids = timings.pop("matched_ids")
        for buffers in args.buffers.split(",") if args.buffers else [None]:
            label = "as loaded"
            if buffers is not None:
                host.stop()
                host.env["SOUNDSPAN_EMBEDDED_DATABASE_SHARED_BUFFERS_MB"] = buffers
                host.start()
                host.wait_for_models()
                label = f"shared_buffers {buffers}: {asyncio.run(prewarm(host))}, prewarmed"
            print(f"load generator ({label}) ...", file=sys.stderr)
            runs.append((label, *measure(host, song_ids, args.requests)))
    except BaseException:
        print(f"host log tail:\n{host.tail()}", file=sys.stderr)
        raise
    finally:
        stopped, problems = stop_and_clean(host, work, args.keep)

    print("\n== soundspan instant mix benchmark ==")
    only = f" --only {args.only}" if args.only else ""
    buffers = f" --buffers {args.buffers}" if args.buffers else ""
    print(f"  {sys.executable} bench/instant_mix.py --tracks {args.tracks}"
          f" --requests {args.requests}{only}{buffers}")  # fmt: skip
    print(f"  host start {startup_s:.1f} s; COPY {timings['copy_s']:.1f} s;"
          f" unmatched tracks {timings['unmatched']}")  # fmt: skip
    sent = (WARM_UP + args.requests) * len(CASES)
    for label, results, cpu in runs:
        print(f"  {label}:")
        for name, values in results.items():
            print(
                f"    {name} {CASES[name]}: p50 {values['p50_ms']:.1f} ms,"
                f" p99 {values['p99_ms']:.1f} ms (n={values['n']}, fewest songs in an answer"
                f" {values['min_songs']})"
            )
        print(
            "    CPU per request, warm-ups included: "
            + ", ".join(
                f"{part} {1000 * cpu[part] / sent:.2f} ms"
                for part in ("host", "postgres", "load generator")
            )
        )
    print(f"  host stop: exit {stopped[0]} after {stopped[1]:.1f} s; "
          f"{len(problems)} WARNING/ERROR lines")  # fmt: skip
    for line in problems[:10]:
        print(f"    {line}")


if __name__ == "__main__":
    main()
