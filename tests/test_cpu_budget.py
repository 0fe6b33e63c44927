"""The host's CPU budget: the CPUs read from real affinity and real cgroup files (written under
a folder that stands for /), and how they are split between the analyzers."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from soundspan_host.cpu_budget import (
    GPU_WORKERS,
    AnalyzerDemand,
    CpuBudget,
    CpuLimits,
    cgroup_cpu_quota,
    demands_from_settings,
    host_budget,
    read_cpu_limits,
    split_budget,
)
from soundspan_host.doctor import check_cpu_budget
from soundspan_host.errors import ConfigError
from soundspan_host.plugins import Plugins, load_plugins
from soundspan_host.settings import read_settings
from tests.harness.cgroup_files import fake_root

READ_AFFINITY = "from soundspan_host.cpu_budget import read_cpu_limits; print(read_cpu_limits())"


def test_a_v2_quota_is_read_from_the_process_cgroup_and_the_tightest_ancestor_wins(tmp_path):
    root = fake_root(
        tmp_path,
        "0::/machine.slice/nas.scope\n",
        {
            "machine.slice/nas.scope/cpu.max": "300000 100000\n",
            "machine.slice/cpu.max": "150000 100000\n",
            "cpu.max": "max 100000\n",
        },
    )
    assert cgroup_cpu_quota(root) == 1.5
    assert CpuLimits(affinity=4, quota=1.5).usable == 1  # rounded down


def test_a_container_with_its_own_cgroup_namespace_reads_its_root(tmp_path):
    assert cgroup_cpu_quota(fake_root(tmp_path, "0::/\n", {"cpu.max": "200000 100000\n"})) == 2


def test_no_quota_is_none(tmp_path):
    assert cgroup_cpu_quota(fake_root(tmp_path, "0::/\n", {"cpu.max": "max 100000\n"})) is None
    assert cgroup_cpu_quota(tmp_path / "no-proc-here") is None


def test_a_v1_quota_is_read_from_the_cpu_controller(tmp_path):
    proc = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n"
    quota = {
        "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "250000\n",
        "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
    }
    assert cgroup_cpu_quota(fake_root(tmp_path / "limited", proc, quota)) == 2.5
    unlimited = {**quota, "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "-1\n"}
    assert cgroup_cpu_quota(fake_root(tmp_path / "unlimited", proc, unlimited)) is None


def test_the_usable_cpus_follow_the_affinity_a_process_was_started_with():
    one_cpu = min(os.sched_getaffinity(0))
    found = subprocess.run(
        [sys.executable, "-c", READ_AFFINITY],
        preexec_fn=lambda: os.sched_setaffinity(0, {one_cpu}),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "affinity=1," in found
    assert read_cpu_limits().affinity == len(os.sched_getaffinity(0))


def test_a_quota_below_one_cpu_still_leaves_one():
    assert CpuLimits(affinity=8, quota=0.5).usable == 1
    assert CpuLimits(affinity=8, quota=None).describe() == "8 CPUs (affinity 8, cgroup quota none)"
    assert CpuLimits(affinity=8, quota=2.5).describe() == "2 CPUs (affinity 8, cgroup quota 2.5)"


BOTH = [AnalyzerDemand("musicnn", "auto"), AnalyzerDemand("clap", "auto")]


@pytest.mark.parametrize(
    "cpus, musicnn, clap, clap_explained",
    [
        (1, 1, 1, "auto: 0 of 1 CPU, shared with musicnn; 1 worker at least"),
        (2, 1, 1, "auto: 1 of 2 CPUs, shared with musicnn"),
        (3, 2, 1, "auto: 1 of 3 CPUs, shared with musicnn"),
        (8, 4, 4, "auto: 4 of 8 CPUs, shared with musicnn"),
    ],
)
def test_both_analyzers_on_auto_share_the_cpus_musicnn_first(cpus, musicnn, clap, clap_explained):
    shares = split_budget(cpus, BOTH)
    assert (shares["musicnn"].workers, shares["clap"].workers) == (musicnn, clap)
    assert shares["clap"].explained == clap_explained


@pytest.mark.parametrize("cpus", [1, 2, 3, 8])
def test_one_analyzer_on_auto_takes_every_cpu(cpus):
    [share] = split_budget(cpus, [AnalyzerDemand("clap", "auto")]).values()
    assert share.workers == cpus
    assert share.explained == f"auto: {cpus} of {cpus} CPU" + ("s" if cpus > 1 else "")


def test_explicit_numbers_win_and_take_their_cpus_first():
    shares = split_budget(8, [AnalyzerDemand("musicnn", 3), AnalyzerDemand("clap", "auto")])
    assert shares["musicnn"].workers == 3 and shares["musicnn"].explained == "set: workers = 3"
    assert shares["clap"].workers == 5
    threaded = [AnalyzerDemand("musicnn", 2, threads_per_worker=3), AnalyzerDemand("clap", "auto")]
    assert split_budget(8, threaded)["clap"].workers == 2  # 2 workers x 3 threads take 6
    greedy = split_budget(2, [AnalyzerDemand("musicnn", 4), AnalyzerDemand("clap", "auto")])
    assert greedy["clap"].workers == 1  # nothing left, and still one
    remote_only = split_budget(4, [AnalyzerDemand("musicnn", 0), AnalyzerDemand("clap", "auto")])
    assert (remote_only["musicnn"].workers, remote_only["clap"].workers) == (0, 4)
    assert remote_only["clap"].explained == "auto: 4 of 4 CPUs"


def test_threads_per_worker_divide_an_auto_share():
    demands = [AnalyzerDemand("musicnn", "auto", 2), AnalyzerDemand("clap", "auto", 2)]
    shares = split_budget(8, demands)
    assert shares["musicnn"].workers == shares["clap"].workers == 2
    expected = "auto: 4 of 8 CPUs at 2 threads a worker, shared with musicnn"
    assert shares["clap"].explained == expected


def test_an_analyzer_on_a_gpu_runs_its_own_workers_outside_the_budget():
    demands = [AnalyzerDemand("musicnn", "auto"), AnalyzerDemand("clap", "auto", on_gpu=True)]
    budget = CpuBudget.split(CpuLimits(affinity=4, quota=None), demands)
    assert budget.share("musicnn").workers == 4
    assert budget.share("clap").workers == GPU_WORKERS
    assert budget.describe() == (
        f"4 CPUs (affinity 4, cgroup quota none): musicnn 4, clap {GPU_WORKERS} on the GPU"
    )
    # device = "auto" that found a GPU: the GPU's count; an explicit number stays as set
    assert budget.share("musicnn", on_gpu=True).workers == GPU_WORKERS
    explicit = CpuBudget.split(CpuLimits(4, None), [AnalyzerDemand("clap", 3)])
    assert explicit.share("clap", on_gpu=True).workers == 3


def test_the_demands_come_from_the_enabled_sections_with_a_workers_setting():
    class Section:
        def __init__(self, **values):
            self.__dict__.update(values)

    sections = {
        "watcher": Section(enabled=True),
        "musicnn": Section(workers="auto", threads_per_worker=1, device="auto"),
        "clap": Section(workers=3, threads_per_worker=2, device="cuda"),
        "off": Section(workers="auto"),
    }
    assert demands_from_settings(sections, ["watcher", "musicnn", "clap"]) == [
        AnalyzerDemand("musicnn", "auto", 1, False),
        AnalyzerDemand("clap", 3, 2, True),
    ]


def both_analyzers(monkeypatch, tmp_path: Path, settings: str = "") -> Plugins:
    monkeypatch.setenv("SOUNDSPAN_MUSICNN__ENABLED", "true")
    monkeypatch.setenv("SOUNDSPAN_CLAP__ENABLED", "true")
    settings_file = tmp_path / "settings.toml"
    settings_file.write_text(settings)
    return load_plugins(read_settings(settings_file))


def test_workers_default_to_auto_and_take_the_seed_variables(monkeypatch, tmp_path):
    plugins = both_analyzers(monkeypatch, tmp_path)
    assert plugins.settings.section("musicnn").workers == "auto"
    assert plugins.settings.section("clap").workers == "auto"
    monkeypatch.setenv("MUSICNN_WORKERS", "3")
    monkeypatch.setenv("CLAP_WORKERS", "auto")
    plugins = both_analyzers(monkeypatch, tmp_path, "[clap]\nworkers = 1\n")
    assert plugins.settings.section("musicnn").workers == 3
    assert plugins.settings.section("clap").workers == "auto"  # the seed's name beats the file
    monkeypatch.setenv("SOUNDSPAN_MUSICNN__WORKERS", "auto")
    assert both_analyzers(monkeypatch, tmp_path).settings.section("musicnn").workers == "auto"
    monkeypatch.setenv("SOUNDSPAN_CLAP__WORKERS", "many")
    with pytest.raises(ConfigError, match=r"\[clap\] workers"):
        both_analyzers(monkeypatch, tmp_path)


def test_a_worker_process_gives_its_one_analyzer_the_whole_budget(monkeypatch, tmp_path):
    plugins = both_analyzers(monkeypatch, tmp_path)
    usable = read_cpu_limits().usable
    assert host_budget(plugins).share("musicnn").workers == (usable + 1) // 2
    plugins.manager.unregister(name="clap")  # as `soundspan-host worker --analyzer musicnn` does
    budget = host_budget(plugins)
    assert budget.share("musicnn").workers == usable
    assert budget.describe().endswith(f": musicnn {usable}")


def test_doctor_warns_where_numbers_set_by_hand_ask_for_more_cpus_than_there_are(
    monkeypatch, tmp_path
):
    usable = read_cpu_limits().usable
    plugins = both_analyzers(monkeypatch, tmp_path, f"[musicnn]\nworkers = {usable + 1}\n")
    check = check_cpu_budget(plugins)
    assert check.status == "warn"
    assert f"the workers set by hand (musicnn) want {usable + 1} CPUs" in check.detail
    assert check_cpu_budget(both_analyzers(monkeypatch, tmp_path)).status == "ok"
