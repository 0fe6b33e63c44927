"""Subsonic benchmark (issue 14): matching a library against a real Subsonic server, and
keeping 10 fresh playlists on it.

It starts a real supysonic server (bench/supysonic_server.py, the tests' server) and the real
host (`soundspan-host serve`, embedded PostgreSQL) in a temporary folder, with only
the watcher, the no-op analyzer (bench/noop_analyzer, by entry point, so no model time counts),
vibe_api and subsonic enabled:

1. N tagged MP3 files (bench/rescan.py's maker: distinct audio, title/artist/album tags) are
   written into our music dir and hard-linked into the server's library folder, every tenth
   one under `elsewhere/` there, so that it can match only by its tags, not by its path.
2. supysonic scans its folder (timed: the server's own work, not ours).
3. The host starts; once every file is analyzed, the first full match refresh is timed from
   POST /api/subsonic/refresh until GET /api/subsonic/status reports a new success, then a
   second one with nothing changed (the incremental case). The server's listing alone (the
   same `search3` pages, by our client, from this process) is timed too, to split the
   refresh into the server's answers and our matching.
4. 10 fresh playlists of 50 tracks each are defined (POST /api/subsonic/playlists); their first
   refresh is timed from the first definition until every playlist has a success, the second
   from POST /api/subsonic/playlists/refresh until every one has a newer success.

The noop analyzer stores no embedding, so vibe_api cannot build a search, similar or mix list
on it: the playlists are `track_ids` recipes (50 tracks spread over the library, a tenth of
them matched by tags). What a refresh costs beyond the recipe is the same for every recipe:
our track ids to server songs, then one `createPlaylist` call.

Reported: seconds, counts (songs on the server, tracks matched by path / by tags, unmatched,
songs sent) and CPU seconds of the host, its PostgreSQL and the supysonic server per phase.

Run from the repository root:

    .venv/bin/python bench/subsonic.py [--files 10000] [--workers 4] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import aiohttp
import asyncpg
import psutil
from common import BenchHost, host_environment, remove_work
from ingest import bench_settings, install_noop_plugin
from rescan import analyzed_at, write_library
from supysonic_server import CLI, Supysonic, supysonic

from soundspan_plugins.subsonic.client import Login, SubsonicClient

USER, PASSWORD = "bench", "bench's secret"
RENAMED_EVERY = 10  # every tenth file lies elsewhere on the server: matched by tags
PLAYLISTS = 10
PLAYLIST_TRACKS = 50
POLL_SECONDS = 0.1
SCAN_TIMEOUT_SECONDS = 3600.0  # supysonic-cli's scan of 10,000 files takes minutes
REFRESH_TIMEOUT_SECONDS = 1800.0


# --- the two libraries ------------------------------------------------------------------------


def link_server_library(music: Path, library: Path, relatives: list[str]) -> int:
    """Hard-link our files into the server's folder; every RENAMED_EVERY-th one under
    `elsewhere/`. Returns how many were put elsewhere."""
    renamed = 0
    for index, relative in enumerate(sorted(relatives)):
        if index % RENAMED_EVERY == 0:
            target, renamed = library / "elsewhere" / relative, renamed + 1
        else:
            target = library / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(music / relative, target)
    return renamed


def timed_scan(server: Supysonic) -> float:
    """The server's scan of its folder, in seconds. Not `Supysonic.scan`: its CLI timeout is
    the tests' (120 s), and a 10,000-file scan takes longer."""
    started = time.monotonic()
    subprocess.run(
        [str(CLI), "folder", "scan", "--foreground", "library"],
        cwd=server.work_dir,
        check=True,
        capture_output=True,
        timeout=SCAN_TIMEOUT_SECONDS,
    )
    return time.monotonic() - started


async def server_listing(url: str) -> tuple[float, int]:
    """Our client's listing of every song, from this process: (seconds, songs)."""
    async with aiohttp.ClientSession() as session:
        client = SubsonicClient(session, url, Login(USER, PASSWORD, None, legacy=True))
        started = time.monotonic()
        songs = [song async for song in client.songs()]
        return time.monotonic() - started, len(songs)


# --- the host ---------------------------------------------------------------------------------


def subsonic_environment(work: Path, site: Path, url: str, workers: int) -> dict:
    """Watcher, noop, vibe_api and subsonic. Nothing refreshes on its own during the bench
    (a library change or new analyses wait an hour), so every refresh timed is one we asked for."""
    users = f'[{{name="{USER}", password="{PASSWORD}"}}]'
    return host_environment(
        work,
        {"watcher", "noop", "vibe_api", "subsonic"},
        SOUNDSPAN_WATCHER__POLL_INTERVAL="0.0",  # inotify
        SOUNDSPAN_NOOP__WORKERS=str(workers),
        SOUNDSPAN_NOOP__POLL_INTERVAL="5.0",
        SOUNDSPAN_SUBSONIC__ENABLED="true",
        SOUNDSPAN_SUBSONIC__URL=url,
        SOUNDSPAN_SUBSONIC__USERS=users,
        SOUNDSPAN_SUBSONIC__LEGACY_LOGIN="true",
        SOUNDSPAN_SUBSONIC__CHANGE_DELAY_SECONDS="3600",
        SOUNDSPAN_SUBSONIC__PLAYLISTS_ANALYSIS_DELAY_SECONDS="3600",
        SOUNDSPAN_SUBSONIC__TIMEOUT_SECONDS="120",
        PYTHONPATH=os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
    )


def call(host: BenchHost, path: str, body: dict | None = None) -> dict:
    """GET (or POST `body`) one of the host's JSON routes."""
    request = urllib.request.Request(host.url(path))
    if body is not None:
        request.data = json.dumps(body).encode()
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.load(answer)


def wait_until(done: Callable[[], dict | None], what: str) -> dict:
    """Poll `done` until it answers something; that answer."""
    started = time.monotonic()
    while (answer := done()) is None:
        if time.monotonic() - started > REFRESH_TIMEOUT_SECONDS:
            raise RuntimeError(f"{what}: not done within {REFRESH_TIMEOUT_SECONDS} s")
        time.sleep(POLL_SECONDS)
    return answer


class Costs:
    """CPU seconds of the host, its PostgreSQL and the supysonic server since `start`."""

    def __init__(self, host: BenchHost, server: Supysonic) -> None:
        self.host, self.server = host, psutil.Process(server.process.pid)
        self.before = self._now()

    def _now(self) -> dict[str, float]:
        times = self.server.cpu_times()
        return {**self.host.cpu_seconds(), "supysonic": times.user + times.system}

    def since(self) -> dict[str, float]:
        now = self._now()
        return {name: now[name] - self.before[name] for name in now}


def timed_match_refresh(host: BenchHost, server: Supysonic) -> dict:
    """POST /api/subsonic/refresh, and wait until the status reports a newer success."""
    before = call(host, "/api/subsonic/status")["last_success"]
    costs = Costs(host, server)
    started = time.monotonic()
    call(host, "/api/subsonic/refresh", {})

    def finished() -> dict | None:
        status = call(host, "/api/subsonic/status")
        if status["state"] == "failed":
            raise RuntimeError(f"the match refresh failed: {status['error']}")
        fresh = status["last_success"] not in (None, before)
        return status if fresh and not status["refreshing"] else None

    status = wait_until(finished, "the match refresh")
    return {"seconds": time.monotonic() - started, "cpu": costs.since(), "status": status}


def playlist_definitions(track_ids: list[str]) -> list[dict]:
    """PLAYLISTS recipes of PLAYLIST_TRACKS tracks each, spread over the whole library."""
    stride = max(len(track_ids) // (PLAYLISTS * PLAYLIST_TRACKS), 1)
    return [
        {
            "name": f"Bench fresh {number + 1}",
            "user": USER,
            "limit": PLAYLIST_TRACKS,
            "track_ids": [
                track_ids[(number + position * PLAYLISTS * stride) % len(track_ids)]
                for position in range(PLAYLIST_TRACKS)
            ],
        }
        for number in range(PLAYLISTS)
    ]


def fresh_playlists(host: BenchHost) -> list[dict]:
    return [entry for entry in call(host, "/api/subsonic/playlists")["playlists"] if entry["fresh"]]


def timed_playlists(host: BenchHost, server: Supysonic, start: Callable[[], None]) -> dict:
    """Run `start`, and wait until every fresh playlist has a success newer than before."""
    before = {entry["name"]: entry["fresh"]["last_success"] for entry in fresh_playlists(host)}
    costs = Costs(host, server)
    started = time.monotonic()
    start()

    def finished() -> list[dict] | None:
        entries = fresh_playlists(host)
        for entry in entries:
            if entry["fresh"]["state"] == "failed":
                raise RuntimeError(f"{entry['name']}: {entry['fresh']['error']}")
        done = [
            entry
            for entry in entries
            if entry["fresh"]["last_success"] not in (None, before.get(entry["name"]))
            and not entry["fresh"]["refreshing"]
        ]
        return entries if len(done) == PLAYLISTS else None

    entries = wait_until(finished, "the playlist refresh")
    return {
        "seconds": time.monotonic() - started,
        "cpu": costs.since(),
        "songs": sum(entry["songs"] for entry in entries),
        "unmatched": sum(entry["unmatched"] for entry in entries),
    }


async def track_ids_by_path(host: BenchHost) -> list[str]:
    db = await asyncpg.connect(host.database_url)
    try:
        return [row["id"] for row in await db.fetch("SELECT id FROM tracks ORDER BY path")]
    finally:
        await db.close()


# --- the run ----------------------------------------------------------------------------------


def loads() -> str:
    return " ".join(f"{load:.2f}" for load in os.getloadavg())


def run(args, work: Path) -> dict:
    site = work / "site"
    install_noop_plugin(site)
    results: dict = {"loads": [loads()]}
    print(f"writing {args.files} tagged MP3 files ...", file=sys.stderr)
    started = time.monotonic()
    relatives = list(write_library(work / "music", args.files, 1.0))
    results["write_s"] = time.monotonic() - started
    library = work / "server library"
    library.mkdir()
    with supysonic(work / "supysonic", library, {USER: PASSWORD}) as server:
        # the server started on an empty folder, so that its scan of the library is timed alone
        results["renamed"] = link_server_library(work / "music", library, relatives)
        print("supysonic scans its folder ...", file=sys.stderr)
        results["scan_s"] = timed_scan(server)
        results["listing"] = [asyncio.run(server_listing(server.url)) for _ in range(2)]
        env = subsonic_environment(work, site, server.url, args.workers)
        results["settings"] = bench_settings(env)
        host = BenchHost(work, env)
        try:
            print("starting the host and analyzing ...", file=sys.stderr)
            launched = time.time()
            host.start()
            results["analyzed_s"] = asyncio.run(analyzed_at(host, args.files, "noop")) - launched
            print("match refresh, first and second ...", file=sys.stderr)
            results["match"] = [timed_match_refresh(host, server) for _ in range(2)]
            definitions = playlist_definitions(asyncio.run(track_ids_by_path(host)))

            def define() -> None:
                for definition in definitions:
                    call(host, "/api/subsonic/playlists", definition)

            print("fresh playlists, first and second refresh ...", file=sys.stderr)
            results["playlists"] = [
                timed_playlists(host, server, define),
                timed_playlists(
                    host, server, lambda: call(host, "/api/subsonic/playlists/refresh", {})
                ),
            ]
            results["peak_rss"] = host.memory.peak
        except BaseException:
            print(f"host log tail:\n{host.tail()}", file=sys.stderr)
            raise
        finally:
            results["stopped"] = host.stop()
            results["problems"] = host.problems()
    results["loads"].append(loads())
    return results


def print_report(args, results: dict) -> None:
    print("\n== soundspan subsonic benchmark ==")
    print(f"  {sys.executable} bench/subsonic.py --files {args.files} --workers {args.workers}")
    print(f"  load average before / after: {results['loads'][0]} / {results['loads'][1]}")
    for name, value in results["settings"].items():
        if "USERS" not in name:
            print(f"  {name}={value}")
    print(
        f"  library: {args.files} files written and linked in {results['write_s']:.1f} s,"
        f" {results['renamed']} of them under other folders on the server"
    )
    print(f"  supysonic scan of its folder: {results['scan_s']:.1f} s")
    for number, (seconds, songs) in enumerate(results["listing"], 1):
        print(f"  server listing by our client alone, run {number}: {seconds:.1f} s, {songs} songs")
    print(f"  start → all {args.files} analyzed: {results['analyzed_s']:.1f} s")
    print(f"  peak RSS of the host: {results['peak_rss'] / 2**20:.0f} MiB")
    print()
    print("| | seconds | counts | CPU s: host / PostgreSQL / supysonic |")
    print("| --- | --- | --- | --- |")
    for label, refresh in zip(("first", "second (nothing changed)"), results["match"], strict=True):
        status = refresh["status"]
        counts = (
            f"{status['songs_on_server']} songs on the server; {status['tracks_checked']} tracks"
            f" looked at; matched {_matched(status['matched'])}; unmatched {status['unmatched']}"
        )
        print(
            f"| match refresh, {label} | **{refresh['seconds']:.1f}** | {counts} |"
            f" {_cpu(refresh)} |"
        )
    for label, refresh in zip(("first", "second"), results["playlists"], strict=True):
        counts = f"{refresh['songs']} songs sent, {refresh['unmatched']} tracks without a song"
        print(
            f"| {PLAYLISTS} fresh playlists, {label} refresh | **{refresh['seconds']:.1f}** |"
            f" {counts} | {_cpu(refresh)} |"
        )
    code, seconds = results["stopped"]
    print(f"\n  stop on SIGTERM: exit {code}, {seconds:.1f} s")
    print(f"  WARNING/ERROR lines in the host log: {len(results['problems'])}")
    for problem in results["problems"][:5]:
        print(f"    {problem}")


def _matched(matched: dict[str, int]) -> str:
    return ", ".join(f"{count} by {method}" for method, count in sorted(matched.items())) or "none"


def _cpu(refresh: dict) -> str:
    cpu = refresh["cpu"]
    return f"{cpu['host']:.1f} / {cpu['postgres']:.1f} / {cpu['supysonic']:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10000, help="files in the library")
    parser.add_argument("--workers", type=int, default=4, help="[noop] workers (default 4)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (and its logs)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="soundspan-subsonic-bench-"))
    try:
        results = run(args, work)
    finally:
        if args.keep:
            print(f"work dir kept: {work}", file=sys.stderr)
        else:
            remove_work(work)
    print_report(args, results)


if __name__ == "__main__":
    main()
