"""The analyzers' process pool: one model load per worker process, thread budgets, and
self-healing."""

import asyncio
import os
import signal

import psutil
import pytest

from soundspan_plugins.shared.audio import UnreadableAudio
from soundspan_plugins.shared.pool import (
    THREAD_VARIABLES,
    ModelPool,
    WorkerCrashed,
    run_in_own_process,
)
from tests.harness.library import eventually
from tests.harness.pool_tasks import (
    describe,
    die,
    environment_variable,
    hang_reading,
    load_model,
    meet,
    refuse,
    thread_pools,
    wait_for_file,
)


async def test_each_worker_loads_the_model_once(tmp_path):
    pool = ModelPool("test", workers=2, load=load_model, load_args=("tiny",), threads=3)
    try:
        both = await asyncio.gather(*(pool.run(meet, str(tmp_path), 2) for _ in range(2)))
        answers = [await pool.run(describe, f"-{number}") for number in range(8)]
    finally:
        await pool.close()
    pids = {pid for pid, _, _, _ in answers}
    assert len(set(both)) == 2 and pids <= set(both) and os.getpid() not in pids
    assert [name for _, name, _, _ in answers] == [f"tiny-{number}" for number in range(8)]
    assert {loads for _, _, loads, _ in answers} == {1}
    assert {threads for _, _, _, threads in answers} == {"3"}


@pytest.mark.parametrize("threads", [1, 2])
async def test_a_worker_keeps_to_its_thread_budget_from_its_first_import(threads, monkeypatch):
    # the host's own environment asks for more: the worker's budget must win, and the host's
    # environment must be left as it was
    for variable in THREAD_VARIABLES:
        monkeypatch.setenv(variable, "8")
    pool = ModelPool("test", workers=1, load=load_model, load_args=("tiny",), threads=threads)
    try:
        pools = await pool.run(thread_pools)
    finally:
        await pool.close()
    assert any(api == "blas" for api, _ in pools), pools  # numpy's OpenBLAS is seen
    assert {count for _, count in pools} == {threads}, pools
    assert {os.environ[variable] for variable in THREAD_VARIABLES} == {"8"}


async def test_a_one_off_step_starts_with_large_blocks_given_back_when_freed(monkeypatch):
    """glibc reads its malloc variables as a process starts: a model export's process has them
    from its first line (its peak steady at 0.82 GiB, not 0.86 to 1.04), the host's environment
    stays as it was."""
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    threshold = await run_in_own_process("test", environment_variable, "MALLOC_MMAP_THRESHOLD_")
    assert threshold == "65536" and "MALLOC_MMAP_THRESHOLD_" not in os.environ


async def test_an_idle_worker_killed_is_replaced_and_no_call_fails():
    pool = ModelPool("test", workers=1, load=load_model, load_args=("tiny",))
    try:
        victim, _, _, _ = await pool.run(describe, "")
        os.kill(victim, signal.SIGKILL)
        await eventually(lambda: _gone(victim), what="the killed worker's exit")
        successor, name, loads, _ = await pool.run(describe, "")
    finally:
        await pool.close()
    assert successor != victim and name == "tiny" and loads == 1


async def test_a_worker_that_dies_fails_its_own_call_and_no_other(tmp_path):
    pool = ModelPool("test", workers=2, load=load_model, load_args=("tiny",))
    go = tmp_path / "go"
    try:
        bystander = asyncio.ensure_future(pool.run(wait_for_file, str(go)))
        with pytest.raises(WorkerCrashed, match="stopped while analyzing .killed by SIGKILL"):
            await pool.run(die)
        go.touch()
        bystander_pid = await bystander
        after, _, _, _ = await pool.run(describe, "")
        workers = {child.pid for child in psutil.Process().children(recursive=True)}
    finally:
        await pool.close()
    # the bystander's worker lives on, beside the one started in the dead one's place
    assert {bystander_pid, after} <= workers


async def test_a_cancelled_call_stops_its_hung_process_and_the_pool_goes_on(tmp_path):
    fifo, pid_file = tmp_path / "stalled-mount.fifo", tmp_path / "hung.pid"
    os.mkfifo(fifo)
    pool = ModelPool("test", workers=1, load=load_model, load_args=("tiny",))
    try:
        hung = asyncio.ensure_future(pool.run(hang_reading, str(fifo), str(pid_file)))
        await eventually(lambda: _exists(pid_file), what="the hung call's start")
        hung_pid = int(pid_file.read_text())
        hung.cancel()
        await eventually(lambda: _gone(hung_pid), what="the hung process's end")
        successor, name, _, _ = await pool.run(describe, "")
    finally:
        await pool.close()
    assert successor != hung_pid and name == "tiny"


async def test_close_stops_a_hung_call_instead_of_waiting_for_it(tmp_path):
    fifo, pid_file = tmp_path / "stalled-mount.fifo", tmp_path / "hung.pid"
    os.mkfifo(fifo)
    pool = ModelPool("test", workers=1, load=load_model, load_args=("tiny",))
    hung = asyncio.ensure_future(pool.run(hang_reading, str(fifo), str(pid_file)))
    await eventually(lambda: _exists(pid_file), what="the hung call's start")
    await asyncio.wait_for(pool.close(), timeout=60)
    assert await _gone(int(pid_file.read_text()))
    hung.cancel()


async def _exists(path) -> bool:
    return path.exists()


async def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


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


async def test_idle_workers_stop_and_the_next_call_starts_fresh_ones(tmp_path):
    go = tmp_path / "go"
    pool = ModelPool("test", workers=1, load=load_model, load_args=("tiny",), idle_seconds=0.5)
    try:
        # a call that outlasts idle_seconds is not idle: its process stays
        slow = asyncio.ensure_future(pool.run(wait_for_file, str(go)))
        await asyncio.sleep(1.5)
        go.touch()
        busy_pid = await slow
        rested, _, _, _ = await pool.run(describe, "")
        await eventually(lambda: _gone(rested), what="the idle worker's end")
        fresh, name, loads, _ = await pool.run(describe, "")
        workers = {child.pid for child in psutil.Process().children(recursive=True)}
    finally:
        await pool.close()
    assert rested == busy_pid  # the long call's process was kept
    assert fresh != rested and name == "tiny" and loads == 1  # the model loaded anew
    assert fresh in workers


async def test_a_call_while_idle_workers_stop_waits_for_fresh_ones():
    pool = ModelPool("test", workers=2, load=load_model, load_args=("tiny",), idle_seconds=0.01)
    try:
        first, _, _, _ = await pool.run(describe, "")
        answers = []
        for _ in range(20):  # calls land before, during and after each stop
            answers.append(await pool.run(describe, ""))
            await asyncio.sleep(0.01)
    finally:
        await pool.close()
    assert [name for _, name, _, _ in answers] == ["tiny"] * 20
    assert len({pid for pid, _, _, _ in answers} | {first}) > 2  # workers were started anew
