"""A job's life when its analysis hangs, its host stops cleanly, or its file moves meanwhile.

A real host on a real PostgreSQL with the toy analyzer, whose `hold_until` setting keeps a job
claimed and running, before it reads its file, for exactly as long as a test needs.
"""

import os

from soundspan_hooks import HOST
from soundspan_host.queue import QueuePolicy
from tests.harness.library import eventually, rows, settled, write_wav

RETRY_SOON = "analysis_retry_delay_seconds = 0.1\n"


def toy(gate, **settings) -> str:
    lines = [f'hold_until = "{gate}"', "workers = 1"]
    lines += [f"{key} = {value}" for key, value in settings.items()]
    return "[toy]\n" + "\n".join(lines) + "\n"


async def job_of(engine, path, state=None):
    """The job of the track at `path` (once it is in `state`, when one is given)."""
    found = await rows(
        engine,
        "SELECT j.state, j.attempts, j.error, j.lease_owner FROM analysis_jobs j"
        " JOIN tracks t USING (content_id) WHERE t.path = :path",
        path=path,
    )
    return found[0] if found and state in (None, found[0].state) else None


async def test_an_analysis_past_its_deadline_is_stopped_and_fails_with_that_reason_at_last(
    fast_host, toy_analyzer, music_dir, tmp_path
):
    host_settings = (
        "analysis_max_attempts = 2\nanalysis_deadline_seconds = 0.5\n"
        "analysis_deadline_seconds_per_audio_minute = 0\n"
    )
    # the analysis never ends: a wait on the host's event loop, which a stop can cancel (unlike
    # a read stuck in the kernel on a stalled mount: tests/test_model_pool.py kills such a one)
    never = tmp_path / "never"
    client = await fast_host(host_settings + RETRY_SOON + toy(never))
    engine = client.app[HOST].engine
    write_wav(music_dir / "stuck.wav", 300)

    job = await eventually(
        lambda: job_of(engine, "stuck.wav", "failed"), what="the job to fail after its attempts"
    )
    assert job.attempts == 2
    assert "stopped after 0.5 s, its deadline" in job.error and "stopped answering" in job.error


async def test_a_clean_stop_gives_running_jobs_back_without_costing_an_attempt(
    fast_host, toy_analyzer, music_dir, tmp_path
):
    never = tmp_path / "never"
    client = await fast_host(RETRY_SOON + toy(never))
    engine = client.app[HOST].engine
    write_wav(music_dir / "busy.wav", 310)

    await eventually(lambda: job_of(engine, "busy.wav", "running"), what="the job to run")
    await client.close()  # the host's clean stop, as on SIGTERM

    [job] = await rows(engine, "SELECT state, attempts, lease_owner, error FROM analysis_jobs")
    assert (job.state, job.attempts, job.lease_owner, job.error) == ("pending", 0, None, None)


async def test_a_file_moved_during_its_analysis_is_analyzed_at_its_new_path_without_a_failure(
    fast_host, toy_analyzer, music_dir, tmp_path
):
    gate = tmp_path / "gate"
    client = await fast_host(RETRY_SOON + toy(gate))
    engine = client.app[HOST].engine
    write_wav(music_dir / "before.wav", 320)

    await eventually(lambda: job_of(engine, "before.wav", "running"), what="the job to run")
    os.rename(music_dir / "before.wav", music_dir / "after.wav")
    await eventually(lambda: job_of(engine, "after.wav"), what="the move to be recorded")
    gate.touch()  # the analysis now reads the path it was claimed with, which is gone

    await eventually(lambda: settled(engine, 1), what="the analysis at the new path")
    [job] = await rows(engine, "SELECT state, attempts, error FROM analysis_jobs")
    assert (job.state, job.attempts, job.error) == ("done", 1, None)


def test_a_deadline_grows_with_the_audio_and_a_header_cannot_make_it_endless():
    policy = QueuePolicy(deadline_seconds=300, deadline_seconds_per_audio_minute=60)
    assert policy.deadline(240) == 300 + 4 * 60
    assert policy.deadline(None) == policy.deadline(10**12) == 300 + 180 * 60
