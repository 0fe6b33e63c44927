"""The pace and ETA of a run, replayed from a recorded real run (tests/fixtures/progress/):
MusiCNN on the CPU, one worker, an earlier batch of three clips, idle time, then a batch of
twelve tracks from 20 s to 8 min, short ones queued first. At any moment of the recording we
know what had finished and what waited, so we can ask what the status would have said then,
and compare its ETA with when the run really ended."""

import json
from pathlib import Path

import pytest

from soundspan_host.progress import Finish, Waiting, measure_run
from soundspan_host.queue import QueuePolicy

RECORDING = json.loads(
    (Path(__file__).parent / "fixtures" / "progress" / "musicnn_run.json").read_text()
)
JOBS = RECORDING["jobs"]
EARLIER = [job for job in JOBS if job["batch"] == "earlier"]
RUN = [job for job in JOBS if job["batch"] == "run"]
POLICY = QueuePolicy()


def seen_at(moment: float, jobs: list[dict] = JOBS) -> tuple[list[Finish], Waiting]:
    """What the queue held at `moment` (seconds into the recording)."""
    finishes = sorted(
        (
            Finish(job["queued_at"], job["finished_at"], job["audio_seconds"])
            for job in jobs
            if job["finished_at"] <= moment
        ),
        key=lambda finish: finish.at,
    )
    waiting = [job for job in jobs if job["queued_at"] <= moment < job["finished_at"]]
    return finishes, Waiting(
        len(waiting),
        sum(job["audio_seconds"] for job in waiting),
        max((job["audio_seconds"] for job in waiting), default=None),
        min((job["queued_at"] for job in waiting), default=None),
    )


def status_at(moment: float, jobs: list[dict] = JOBS):
    return measure_run(*seen_at(moment, jobs), moment, POLICY)


def run_finishes() -> list[float]:
    return sorted(job["finished_at"] for job in RUN)


def test_a_fresh_start_is_not_measured_before_two_finishes():
    moment = min(job["finished_at"] for job in EARLIER) - 0.1
    nothing_done = status_at(moment)
    assert nothing_done.tracks_per_minute is None and nothing_done.eta_seconds is None
    assert nothing_done.run_started_at is None
    queued = [job for job in EARLIER if job["queued_at"] <= moment]
    assert nothing_done.audio_minutes_waiting == pytest.approx(
        sum(job["audio_seconds"] for job in queued) / 60
    )
    # the run's tracks are queued, the earlier batch long done: that batch is no pace for them
    queued = status_at(min(job["queued_at"] for job in RUN) + 0.1)
    assert queued.run_started_at is None and queued.eta_seconds is None
    first = run_finishes()[0]
    one_done = status_at(first + 0.1)
    assert one_done.run_started_at == first
    assert one_done.tracks_per_minute is None and one_done.audio_minutes_per_minute is None


@pytest.mark.parametrize("done", [3, 6, 9])
def test_idle_time_before_a_run_does_not_lower_its_rate(done):
    finishes = run_finishes()
    moment = finishes[done - 1] + 0.5
    measured = status_at(moment)
    assert measured.run_started_at == finishes[0]
    minutes = (moment - finishes[0]) / 60
    assert measured.tracks_per_minute == pytest.approx((done - 1) / minutes)
    # the same as if the earlier batch and the idle time had never been
    assert measured == status_at(moment, RUN)


# from the 5th finish on, every track of the run had been queued
@pytest.mark.parametrize("done", range(5, 12))
def test_the_eta_from_audio_waiting_holds_when_long_tracks_come_last(done):
    finishes = run_finishes()
    moment = finishes[done - 1] + 0.5
    measured = status_at(moment)
    really_left = finishes[-1] - moment
    # each track costs a little beside its audio (decoding, a worker's turn), which the short
    # tracks done first make weigh more: the ETA errs late, never by twice
    assert really_left * 0.8 <= measured.eta_seconds <= really_left * 1.7
    # counting tracks instead: the short ones done first promise far too soon an end
    by_tracks = (len(RUN) - done) / measured.tracks_per_minute * 60
    assert abs(measured.eta_seconds - really_left) < abs(by_tracks - really_left)
    audio_done = sum(job["audio_seconds"] for job in RUN if job["finished_at"] <= moment)
    first_audio = min(RUN, key=lambda job: job["finished_at"])["audio_seconds"]
    minutes = (moment - finishes[0]) / 60
    assert measured.audio_minutes_per_minute == pytest.approx(
        (audio_done - first_audio) / 60 / minutes
    )


def test_a_stalled_run_slows_then_ends():
    finishes = run_finishes()
    last, waiting = seen_at(finishes[5] + 0.5)
    steady = measure_run(last, waiting, finishes[5] + 0.5, POLICY)
    stalled = measure_run(last, waiting, finishes[5] + 120, POLICY)
    assert stalled.tracks_per_minute < steady.tracks_per_minute / 2
    assert stalled.eta_seconds > steady.eta_seconds * 2
    # past the longest an analysis of the longest waiting track may take: no pace at all
    gone = finishes[5] + POLICY.deadline(waiting.longest_audio_seconds) + 1
    ended = measure_run(last, waiting, gone, POLICY)
    assert ended.tracks_per_minute is None and ended.run_started_at is None
    assert ended.audio_minutes_waiting == steady.audio_minutes_waiting


def test_one_long_track_alone_does_not_divide_a_run():
    hour = 3600.0
    finishes = [Finish(0, 60, 180), Finish(0, 120, 180), Finish(0, 120 + 50 * 60, hour)]
    waiting = Waiting(1, 180, 180, 0)
    measured = measure_run(finishes, waiting, 120 + 50 * 60 + 1, POLICY)
    assert measured.run_started_at == 60
    assert measured.tracks_per_minute == pytest.approx(2 / ((50 * 60 + 61) / 60))


def test_without_any_known_length_the_eta_counts_tracks():
    finishes = [Finish(0, 60, None), Finish(0, 120, None), Finish(0, 180, None)]
    measured = measure_run(finishes, Waiting(4, 0, None, 0), 180, POLICY)
    assert measured.audio_minutes_per_minute is None
    assert measured.tracks_per_minute == pytest.approx(1)
    assert measured.eta_seconds == 4 * 60


def test_a_track_waiting_since_before_a_finish_keeps_the_run_whole():
    # a long track has run since the start while a file added later was analyzed beside it
    finishes = [Finish(0, 10, 30), Finish(50, 60, 30)]
    measured = measure_run(finishes, Waiting(1, 600, 600, 0), 61, POLICY)
    assert measured.run_started_at == 10
    assert measured.tracks_per_minute == pytest.approx(1 / (51 / 60))
