"""The analyzers' process pool: one model load per worker process, and self-healing."""

import os
import signal

import pytest

from soundspan_plugins.shared.audio import UnreadableAudio
from soundspan_plugins.shared.pool import ModelPool, WorkerCrashed
from tests.pool_tasks import describe, load_model, refuse


async def test_each_worker_loads_the_model_once():
    pool = ModelPool("test", workers=2, load=load_model, load_args=("tiny",), threads=3)
    try:
        answers = [await pool.run(describe, f"-{number}") for number in range(8)]
    finally:
        await pool.close()
    pids = {pid for pid, _, _, _ in answers}
    assert 1 <= len(pids) <= 2 and os.getpid() not in pids
    assert [name for _, name, _, _ in answers] == [f"tiny-{number}" for number in range(8)]
    assert {loads for _, _, loads, _ in answers} == {1}
    assert {threads for _, _, _, threads in answers} == {"3"}


async def test_a_killed_worker_is_replaced_and_the_call_says_so():
    pool = ModelPool("test", workers=1, load=load_model, load_args=("tiny",))
    try:
        victim, _, _, _ = await pool.run(describe, "")
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(WorkerCrashed, match="test worker process stopped"):
            for _ in range(50):  # the pool notices the death on its next use
                await pool.run(describe, "")
        successor, name, loads, _ = await pool.run(describe, "")
    finally:
        await pool.close()
    assert successor != victim and name == "tiny" and loads == 1


async def test_an_analysis_error_comes_back_whole_and_the_pool_lives_on():
    pool = ModelPool("test", workers=1, load=load_model, load_args=("tiny",))
    try:
        with pytest.raises(UnreadableAudio) as caught:
            await pool.run(refuse, "/music/empty.mp3")
        _, name, _, _ = await pool.run(describe, "")
    finally:
        await pool.close()
    assert caught.value.reason == "the file is empty (0 bytes)."
    assert str(caught.value.path) == "/music/empty.mp3"
    assert name == "tiny"
