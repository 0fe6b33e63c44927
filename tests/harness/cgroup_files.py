"""A folder that stands for / with the cgroup files a test writes: what the host reads of its
CPU and memory limits, without a container."""

from __future__ import annotations

from pathlib import Path


def fake_root(tmp_path: Path, proc_cgroup: str, files: dict[str, str]) -> Path:
    """`tmp_path` holding proc/self/cgroup and, under sys/fs/cgroup, `files` by relative path."""
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text(proc_cgroup)
    for name, content in files.items():
        path = tmp_path / "sys/fs/cgroup" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return tmp_path
