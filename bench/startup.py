"""Start-up benchmark (issue 16): how long a second start of the host takes to answer /healthz.

`make run` runs `soundspan-host serve`; this script runs the same command in a temporary
folder, with the plugins settings.toml enables by default (watcher, musicnn, clap, vibe_api,
status_page) and the embedded database. CLAP is unavailable, as on a
host without its weights: `[clap] allow_download = false` and none on disk, so nothing is
fetched. The first start makes the data dir (initdb, migrations, the MusiCNN ONNX cache) and
is not the one measured; then the host is started `--starts` more times on that data dir,
each timed from launching the process until `GET /healthz` answers 200 (polled every 0.2 s).

One more start runs with `PYTHONPROFILEIMPORTTIME=1` (what `python -X importtime` does), to
say where the time goes: its log's lines timed from the launch, and the slowest imports,
cumulative, and whether torch was imported. The imports before the host's first log line are
its own start-up's; those after come from starting the plugins (the analyzer workers, spawned
processes that inherit the variable, interleaved) and from imports plugins make lazily.

    .venv/bin/python bench/startup.py [--starts 3] [--top 25] [--disable musicnn] [--keep]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from common import BenchHost, host_environment, remove_work

DEFAULT_PLUGINS = {"watcher", "musicnn", "clap", "vibe_api", "status_page"}
TIMELINE_LINES = 30
IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (.*)")


def start_environment(work: Path, enabled: set[str]) -> dict:
    return host_environment(work, enabled, SOUNDSPAN_CLAP__ALLOW_DOWNLOAD="false")


def timed_start(host: BenchHost) -> tuple[float, list[str]]:
    """(seconds to /healthz, the log's WARNING/ERROR lines) of one start, stopped after."""
    try:
        seconds = host.start()
    finally:
        host.stop()
    return seconds, host.problems()


def imports(lines: list[str]) -> list[tuple[int, int, str]]:
    """(cumulative microseconds, nesting depth, module) of each import in importtime lines."""
    found = []
    for line in lines:
        if match := IMPORT_LINE.match(line):
            depth = len(match.group(3)) // 2
            found.append((int(match.group(2)), depth, match.group(4)))
    return found


def timeline(log: str, launched: float, shown: int) -> None:
    """The log's lines (not the import ones), each with the seconds since the launch."""
    print("log of the profiled start, seconds after the launch:")
    for line in [line for line in log.splitlines() if LOG_LINE.match(line)][:shown]:
        stamp, message = LOG_LINE.match(line).groups()
        at = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp() - launched
        print(f"  {at:6.2f}  {message[:110]}")


def import_report(title: str, lines: list[str], top: int) -> None:
    """The slowest top-level packages, and the slowest modules at any depth."""
    found = imports(lines)
    total = sum(cumulative for cumulative, depth, _ in found if depth == 0)
    print(f"{title}: {len(found)} imports, {total / 1e6:.2f} s cumulative at top level")
    print(f"  torch imported: {'yes' if any(m == 'torch' for _, _, m in found) else 'no'}")
    packages: dict[str, int] = {}
    for cumulative, depth, module in found:
        if depth == 0:
            root = module.split(".")[0]
            packages[root] = packages.get(root, 0) + cumulative
    print("  by top-level package (cumulative s):")
    for root, micros in sorted(packages.items(), key=lambda item: -item[1])[:top]:
        print(f"    {micros / 1e6:6.3f}  {root}")
    print(f"  slowest modules at depth <= 2 (cumulative s, the depth in brackets), top {top}:")
    shallow = [row for row in found if row[1] <= 2]
    for cumulative, depth, module in sorted(shallow, reverse=True)[:top]:
        print(f"    {cumulative / 1e6:6.3f}  [{depth}] {module}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=3, help="timed starts after the first")
    parser.add_argument("--top", type=int, default=25, help="import lines shown")
    parser.add_argument(
        "--disable",
        action="append",
        default=[],
        choices=sorted(DEFAULT_PLUGINS),
        help="a default plugin to disable, to see what it costs (repeatable)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir (and its log)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="soundspan-startup-bench-"))
    (work / "music").mkdir()
    enabled = DEFAULT_PLUGINS - set(args.disable)
    env = start_environment(work, enabled)
    try:
        first, _ = timed_start(BenchHost(work, env))
        print(f"first start (makes the data dir): {first:.2f} s", file=sys.stderr)
        seconds, problems = [], []
        for _ in range(args.starts):
            took, problems = timed_start(BenchHost(work, env))
            seconds.append(took)
            print(f"  second start: {took:.2f} s", file=sys.stderr)
        profiled = BenchHost(work, {**env, "PYTHONPROFILEIMPORTTIME": "1"})
        launched = time.time()
        profiled_s, _ = timed_start(profiled)
        log = profiled.log_path.read_text(errors="replace")
    finally:
        if args.keep:
            print(f"work dir kept: {work}", file=sys.stderr)
        else:
            remove_work(work)

    print("\n== soundspan start-up benchmark ==")
    disabled = "".join(f" --disable {name}" for name in args.disable)
    print(f"  {sys.executable} bench/startup.py --starts {args.starts}{disabled}")
    print(f"  plugins enabled: {', '.join(sorted(enabled))}; CLAP without weights")
    print(f"first start (initdb, migrations, caches): {first:.2f} s")
    print(
        f"second start to /healthz: {', '.join(f'{s:.2f}' for s in seconds)} s "
        f"(median {statistics.median(seconds):.2f} s)"
    )
    print(f"WARNING/ERROR lines in the last start's log: {len(problems)}")
    for line in problems[:5]:
        print(f"    {line}")
    print(f"the start with import profiling (slower for it): {profiled_s:.2f} s")
    timeline(log, launched, TIMELINE_LINES)
    lines = log.splitlines()
    first_log = next((n for n, line in enumerate(lines) if LOG_LINE.match(line)), len(lines))
    import_report("the host's own imports (before its first log line)", lines[:first_log], args.top)
    import_report(
        "imports after (plugins starting: analyzer workers, lazy imports)",
        lines[first_log:],
        args.top,
    )


if __name__ == "__main__":
    main()
