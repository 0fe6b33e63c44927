"""Recall at scale (issue 27 item 5): how many of the exact 10 nearest the HNSW search finds, by
`hnsw.ef_search` and by how many candidates a request looks at, at up to a million tracks.

bench/scale.py measured recall@10 of a LIMIT 10 query at the default ef_search (40): 0.85 at a
million tracks. The API looks at more than 10 (a list of 20 looks at 80 candidates, a mix's
list of 200 at 221 or more) with a relaxed iterative scan, and keeps the nearest of them: this
measures that too, for several ef_search values, against the exact answer computed once per
source, on bench/api.py's library (clustered synthetic embeddings; COPY in chunks, the
migrations' HNSW index built after it).

With `--builds 16:64,32:128`, the index is built again with each `m:ef_construction` in turn
(the migrations' is pgvector's default, 16:64) and measured after each build, on the same
library and sources: the build's time and size beside what it finds.

Run from the repository root (a million tracks: about 7 minutes on 2 cores, a build more each):

    .venv/bin/python bench/recall.py [--tracks 1000000] [--analyzer musicnn] [--sources 50]
        [--builds M:EF_CONSTRUCTION,...]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
from api import NEAREST, api_environment, build_index, content_id, copy_library, stop_and_clean
from common import BenchHost
from pgvector.asyncpg import register_vector
from random_clap import save_tiny_clap
from scale import mwm_mib

from soundspan_plugins.musicnn.tags import MSD_TAGS

EF_SEARCHES = (40, 100, 200, 400)  # 40: pgvector's default; 200: the API's
LOOKS = (10, 80, 277)  # a bare top 10; a list of 20 (4 a result); a mix of 200's first look


async def exact_points(db: asyncpg.Connection, table: str, tracks: int, sources: int) -> list:
    """Random sources with their vector and their exact 10 nearest (a full scan each)."""
    rng = random.Random(3)
    query = NEAREST.format(table=table)
    points = []
    for _ in range(sources):
        source = content_id(rng.randrange(tracks))
        vector = await db.fetchval(f"SELECT embedding FROM {table} WHERE content_id = $1", source)
        async with db.transaction():
            await db.execute("SET LOCAL enable_indexscan = off")
            exact = {row[0] for row in await db.fetch(query, vector, source, 10)}
        points.append((source, vector, exact))
    return points


async def measure(db: asyncpg.Connection, table: str, points: list) -> dict:
    query = NEAREST.format(table=table)
    found = {}
    for ef_search in EF_SEARCHES:
        for look in LOOKS:
            recalls, times = [], []
            for source, vector, exact in points:
                async with db.transaction():
                    await db.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
                    await db.execute(f"SET LOCAL hnsw.ef_search = {ef_search}")
                    started = time.perf_counter()
                    rows = await db.fetch(query, vector, source, look)
                    times.append(time.perf_counter() - started)
                nearest = {row[0] for row in rows[:10]}  # the query sorts by distance
                recalls.append(len(nearest & exact) / 10)
            found[(ef_search, look)] = (
                sum(recalls) / len(recalls),
                min(recalls),
                1000 * sorted(times)[len(times) // 2],
            )
    return found


async def load_and_measure(host: BenchHost, args) -> dict:
    db = await asyncpg.connect(host.database_url)
    try:
        await register_vector(db)
        print(f"loading {args.tracks} tracks ...", file=sys.stderr)
        copy_s = await copy_library(db, args.tracks, MSD_TAGS, [args.analyzer], chunk=100_000)
        await db.execute(f"SET maintenance_work_mem = '{mwm_mib(args.tracks, [args.analyzer])}MB'")
        table = f"{args.analyzer}_results"
        await db.execute("ANALYZE")
        print("exact answers ...", file=sys.stderr)
        points = await exact_points(db, table, args.tracks, args.sources)
        builds = {}
        for build in args.builds.split(",") if args.builds else [None]:
            options = ""
            if build is not None:
                m, ef_construction = (int(part) for part in build.split(":"))
                options = f" WITH (m = {m}, ef_construction = {ef_construction})"
                await db.execute(f"DROP INDEX IF EXISTS {args.analyzer}_results_embedding")
            print(f"HNSW build{options} ...", file=sys.stderr)
            build_s = await build_index(db, table, options)
            size = await db.fetchval(
                f"SELECT pg_relation_size('{args.analyzer}_results_embedding') / 1048576"
            )
            print("recall ...", file=sys.stderr)
            builds[build or "migrations'"] = (build_s, size, await measure(db, table, points))
        return {"copy_s": copy_s, "builds": builds}
    finally:
        await db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=1_000_000)
    parser.add_argument("--analyzer", choices=("musicnn", "clap"), default="musicnn")
    parser.add_argument("--sources", type=int, default=50)
    parser.add_argument("--builds", help="m:ef_construction of each build, e.g. 16:64,32:128")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (and its log)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="soundspan-recall-bench-"))
    (work / "music").mkdir()
    clap = save_tiny_clap(work / "tiny-clap", projection_dim=512)
    host = BenchHost(work, api_environment(work, clap))
    try:
        host.start()
        host.wait_for_models()
        results = asyncio.run(load_and_measure(host, args))
    finally:
        stop_and_clean(host, work, args.keep)
    print("\n== soundspan recall benchmark ==")
    builds = f" --builds {args.builds}" if args.builds else ""
    print(f"  {sys.executable} bench/recall.py --tracks {args.tracks} --analyzer {args.analyzer}"
          f" --sources {args.sources}{builds}")  # fmt: skip
    print(f"  COPY {results['copy_s']:.1f} s")
    for build, (build_s, size_mib, found) in results["builds"].items():
        print(f"  m:ef_construction {build}: HNSW build {build_s:.1f} s, index {size_mib} MiB")
        print("    ef_search  candidates  recall@10 (mean; min)  query p50")
        for (ef_search, look), (recall, lowest, p50_ms) in found.items():
            row = f"{ef_search:9d}  {look:10d}  {recall:.3f}; {lowest:.1f}"
            print(f"    {row:45s}  {p50_ms:.1f} ms")


if __name__ == "__main__":
    main()
