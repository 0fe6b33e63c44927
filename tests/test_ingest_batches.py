"""Library events that arrive together are recorded together (one transaction per batch) with
the same outcome as one by one: order per path, moves found by content, and a file the
database refuses fails alone. Events go through the real hook of a real host on a real
PostgreSQL; their facts are made up, so no file is read. And a burst that outruns inotify (its
kernel queue overflows) is caught up by a reconcile."""

import asyncio
import inspect
import logging
import secrets

import pytest
from watchdog.observers import inotify_c

from soundspan_hooks import HOST, LibraryEvent, LibraryEventKind, TrackFacts
from soundspan_plugins.watcher.watching import InotifyOverflowAlarm
from tests.harness.library import eventually, jobs, present_paths, scalar, tracks, write_wav

APPEARED, CHANGED, MOVED, VANISHED = (
    LibraryEventKind.APPEARED,
    LibraryEventKind.CHANGED,
    LibraryEventKind.MOVED,
    LibraryEventKind.VANISHED,
)
# no reconcile and no workers: only the events sent here touch the tables
QUIET = "[watcher]\nreconcile_on_start = false\n[toy]\nworkers = 0\n"


@pytest.fixture
async def host(fast_host, toy_analyzer):
    return (await fast_host(QUIET)).app[HOST]


def facts(content: str) -> TrackFacts:
    return TrackFacts(fingerprint=f"pl1:{content}", size=len(content), mtime=1.0, title=content)


def event(kind: LibraryEventKind, path: str, content: str | None = None, old: str | None = None):
    return LibraryEvent(kind, path, old_path=old, facts=facts(content) if content else None)


async def send_together(host, events: list[LibraryEvent]) -> list[BaseException | None]:
    """Call the hook for every event before awaiting any, as the watcher does in a burst."""
    answers = [host.hook.soundspan_library_event(host=host, event=e) for e in events]
    awaitables = [answer for each in answers for answer in each if answer is not None]
    assert len(awaitables) == len(events)  # the catalogue's answer to each
    return await asyncio.gather(*awaitables, return_exceptions=True)


async def contents(engine) -> dict[str, str]:
    """path -> content fingerprint of present tracks."""
    return {
        path: await scalar(engine, "SELECT payload_id FROM contents WHERE id = :id", id=content)
        for path, (_, content, missing) in (await tracks(engine)).items()
        if not missing
    }


async def test_a_burst_is_recorded_in_one_transaction_in_order(host):
    burst = [event(APPEARED, f"drop/{n:03}.wav", f"c{n}") for n in range(200)]
    burst += [
        event(VANISHED, "drop/010.wav"),  # after its own arrival: it is gone
        event(CHANGED, "drop/020.wav", "c20-edited"),  # the later content wins
        event(MOVED, "moved/030.wav", "c30", old="drop/030.wav"),
    ]
    assert await send_together(host, burst) == [None] * len(burst)

    recorded = await contents(host.engine)
    assert len(recorded) == 199  # 200, less the vanished; the moved one at its new path
    assert "drop/010.wav" not in recorded and (await tracks(host.engine))["drop/010.wav"][2]
    assert recorded["drop/020.wav"] == "pl1:c20-edited"
    assert recorded["moved/030.wav"] == "pl1:c30" and "drop/030.wav" not in recorded
    queued = await jobs(host.engine)
    assert len(queued) == 201 and {state for state, _ in queued.values()} == {"pending"}
    # now() is the transaction's start: one value for every row means one transaction
    assert await scalar(host.engine, "SELECT count(DISTINCT added_at) FROM tracks") == 1


async def test_a_file_the_database_refuses_fails_alone_in_its_batch(host):
    too_long = "/".join(["deep", *(secrets.token_urlsafe(168) for _ in range(13)), "x.wav"])
    burst = [event(APPEARED, f"drop/{n:02}.wav", f"c{n}") for n in range(20)]
    burst[10:10] = [event(APPEARED, too_long, "long")]

    outcomes = await send_together(host, burst)

    refused = outcomes.pop(10)
    assert isinstance(refused, ValueError) and "shorten its folder or file names" in str(refused)
    assert outcomes == [None] * 20
    assert len(await contents(host.engine)) == 20 and len(await jobs(host.engine)) == 20


async def test_a_batch_decides_who_keeps_a_missing_track_as_one_by_one_would(host):
    """A missing track is wanted twice in one batch: by a new path that has its content, and
    by its own path that came back with other content. The first event in order wins."""
    engine = host.engine
    await send_together(host, [event(APPEARED, "a.wav", "x"), event(VANISHED, "a.wav")])
    track = (await tracks(engine))["a.wav"][0]

    await send_together(host, [event(APPEARED, "b.wav", "x"), event(APPEARED, "a.wav", "y")])

    now = await tracks(engine)
    assert now["b.wav"][0] == track  # moved by content, as the earlier event
    assert now["a.wav"][0] != track and not now["a.wav"][2]
    assert await contents(engine) == {"b.wav": "pl1:x", "a.wav": "pl1:y"}


async def test_duplicates_in_a_batch_share_one_content_and_one_job(host):
    await send_together(host, [event(APPEARED, f"copy{n}.wav", "same") for n in range(5)])
    recorded = await contents(host.engine)
    assert set(recorded.values()) == {"pl1:same"} and len(recorded) == 5
    assert len(await jobs(host.engine)) == 1


async def test_files_whose_events_an_inotify_overflow_lost_are_found_by_a_reconcile(
    fast_host, toy_analyzer, music_dir
):
    # on disk before the start, with no reconcile at start: the watcher never saw them, as
    # after a kernel queue overflow
    unseen = {f"unseen-{n}.wav" for n in range(3)}
    for n, name in enumerate(sorted(unseen)):
        write_wav(music_dir / name, 200 + 100 * n)
    engine = (await fast_host(QUIET)).app[HOST].engine
    assert await tracks(engine) == {}

    # the line watchdog logs when the kernel dropped events, and tells no handler
    lost = "Inotify queue overflowed; filesystem events were lost"
    assert lost in inspect.getsource(inotify_c), "watchdog says it in other words now"
    assert lost.startswith(InotifyOverflowAlarm.MESSAGE)
    logging.getLogger(InotifyOverflowAlarm.LOGGER).warning(lost)
    await eventually(lambda: present_paths(engine, unseen), what="a reconcile after the overflow")
