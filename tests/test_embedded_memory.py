"""The embedded PostgreSQL's page cache: sized from the memory this process may use, read from
the machine and from real cgroup files (written under a folder that stands for /)."""

from pathlib import Path

import psutil

from soundspan_host.cgroups import cgroup_memory_limit
from soundspan_host.database.embedded_memory import size_shared_buffers, usable_memory
from tests.harness.cgroup_files import fake_root

GIB = 1 << 30


def test_auto_keeps_an_eighth_of_the_memory_between_postgres_default_and_2_gb():
    assert size_shared_buffers("auto", 4 * GIB).megabytes == 512  # a 4 GB NAS
    assert size_shared_buffers("auto", 16 * GIB).megabytes == 2048
    assert size_shared_buffers("auto", 64 * GIB).megabytes == 2048
    assert size_shared_buffers("auto", GIB // 2).megabytes == 128
    assert "an eighth of 4.0 GiB" in size_shared_buffers("auto", 4 * GIB).why


def test_a_number_of_megabytes_wins_over_the_memory():
    chosen = size_shared_buffers(300, 64 * GIB)
    assert (chosen.megabytes, chosen.setting) == (300, "300MB")
    assert "set" in chosen.why


def test_a_v2_memory_limit_is_read_and_the_tightest_ancestor_wins(tmp_path):
    root = fake_root(
        tmp_path,
        "0::/box/host\n",
        {"box/memory.max": f"{2 * GIB}\n", "box/host/memory.max": "max\n"},
    )
    assert cgroup_memory_limit(root) == 2 * GIB
    assert (
        cgroup_memory_limit(fake_root(tmp_path / "free", "0::/\n", {"memory.max": "max\n"})) is None
    )


def test_a_v1_memory_limit_is_read_and_its_no_limit_value_is_none(tmp_path):
    proc = "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n"
    limited = fake_root(
        tmp_path / "limited", proc, {"memory/docker/abc/memory.limit_in_bytes": f"{GIB}\n"}
    )
    assert cgroup_memory_limit(limited) == GIB
    unlimited = {"memory/docker/abc/memory.limit_in_bytes": "9223372036854771712\n"}
    assert cgroup_memory_limit(fake_root(tmp_path / "unlimited", proc, unlimited)) is None


def test_the_usable_memory_is_the_machines_under_no_limit():
    assert usable_memory(Path("/no-such-root")) == psutil.virtual_memory().total
