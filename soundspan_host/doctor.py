"""`soundspan-host doctor`: checks settings, folders, the database and its pgvector, and asks
each plugin to check what it needs (models, GPU), printing what to fix."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import asyncpg

from soundspan_hooks import Check
from soundspan_host.cpu_budget import host_budget
from soundspan_host.database import async_url
from soundspan_host.database.embedded import EmbeddedPostgres, listening_endpoints
from soundspan_host.database.embedded_access import SUPERUSER, secret_file
from soundspan_host.database.embedded_placement import orphaned_clusters
from soundspan_host.errors import ConfigError
from soundspan_host.plugins import Plugins, load_plugins
from soundspan_host.settings import HostSettings, read_settings

PGVECTOR_WANTED = (0, 8)  # hnsw.iterative_scan, which the vibe API relies on
FILES_SAMPLED = 5000


def run_checks(settings_file: Path | None) -> list[Check]:
    try:
        plugins = load_plugins(read_settings(settings_file))
    except ConfigError as error:
        return [Check("settings", "fail", str(error), "correct the named key or variable")]
    host = plugins.settings.host
    source = host.settings_file or "defaults and environment"
    checks = [Check("settings", "ok", f"read {source}; plugins: {_enabled(plugins)}")]
    checks.append(check_cpu_budget(plugins))
    checks += check_music_dir(host.music_dir)
    checks.append(check_data_dir(host.data_dir))
    checks += check_writable_by_others(host.data_dir)
    checks += check_placed_clusters()
    checks += asyncio.run(check_database(host))
    for answer in plugins.manager.hook.soundspan_doctor(
        sections=plugins.settings.sections, music_dir=host.music_dir, data_dir=host.data_dir
    ):
        checks += answer or []
    return checks


def _enabled(plugins: Plugins) -> str:
    return ", ".join(plugin.name for plugin in plugins.enabled) or "none"


def check_cpu_budget(plugins: Plugins) -> Check:
    """How the CPUs this host may use are split between its analyzers' workers; a warning
    where numbers set by hand ask for more CPUs than there are (busy workers slow each other)."""
    budget = host_budget(plugins)
    asked = {
        demand.name: demand.workers * demand.threads_per_worker
        for demand in budget.demands.values()
        if demand.workers != "auto"
    }
    if sum(asked.values()) <= budget.limits.usable:
        return Check("CPU budget", "ok", budget.describe())
    return Check(
        "CPU budget",
        "warn",
        f"{budget.describe()}; the workers set by hand ({', '.join(asked)}) want "
        f"{sum(asked.values())} CPUs",
        "set their workers to auto, or lower them (or their threads_per_worker)",
    )


def check_music_dir(music_dir: Path) -> list[Check]:
    if not music_dir.is_dir():
        return [
            Check(
                "music dir",
                "fail",
                f"{music_dir.resolve()} does not exist",
                "create it, or set SOUNDSPAN_MUSIC_DIR to your library",
            )
        ]
    if not os.access(music_dir, os.R_OK | os.X_OK):
        return [
            Check(
                "music dir",
                "fail",
                f"{music_dir.resolve()} cannot be listed by this user (uid {os.getuid()})",
                "give this user read access (chmod/chown), or run as the library's owner",
            )
        ]
    seen, unreadable = 0, []
    for folder, _, names in os.walk(music_dir):
        for name in names:
            seen += 1
            if not os.access(os.path.join(folder, name), os.R_OK):
                unreadable.append(os.path.relpath(os.path.join(folder, name), music_dir))
        if seen >= FILES_SAMPLED:
            break
    if unreadable:
        shown = ", ".join(unreadable[:3]) + (" ..." if len(unreadable) > 3 else "")
        return [
            Check(
                "music dir",
                "warn",
                f"{len(unreadable)} of {seen} files sampled cannot be read: {shown}",
                "give this user read access to them; their analyses fail until then",
            )
        ]
    return [Check("music dir", "ok", f"{music_dir.resolve()}: {seen} files sampled, all readable")]


def check_data_dir(data_dir: Path) -> Check:
    existing = next(parent for parent in (data_dir, *data_dir.resolve().parents) if parent.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        return Check(
            "data dir",
            "fail",
            f"{existing} is not writable: {data_dir} holds the database and model cache",
            "set SOUNDSPAN_DATA_DIR to a writable folder",
        )
    return Check("data dir", "ok", f"{data_dir.resolve()} is writable")


def check_writable_by_others(data_dir: Path) -> list[Check]:
    """The data dir and the folders under it (model caches, the database's link) must be
    this user's alone to write: another account could swap a model or a password there."""
    if not data_dir.is_dir():
        return []
    open_to_others = []
    for folder, names, _ in os.walk(data_dir):
        found = os.lstat(folder)
        if found.st_mode & 0o022 or found.st_uid != os.geteuid():
            open_to_others.append(f"{folder} ({stat.S_IMODE(found.st_mode):o}, uid {found.st_uid})")
        names[:] = [name for name in names if name != "postgres"]  # the server's own
    if not open_to_others:
        return []
    return [
        Check(
            "data dir",
            "warn",
            "others may write in " + ", ".join(open_to_others[:3]),
            f"chown -R {os.geteuid()} {data_dir} && chmod -R go-w {data_dir}: another account "
            "could replace a model or the database's link there",
        )
    ]


def check_placed_clusters() -> list[Check]:
    """Databases placed under /var/lib for a data dir that is gone (as root only)."""
    orphans = orphaned_clusters()
    if not orphans:
        return []
    shown = "; ".join(f"{home} (for {owner})" for home, owner in orphans[:5])
    more = f" and {len(orphans) - 5} more" if len(orphans) > 5 else ""
    return [
        Check(
            "placed databases",
            "warn",
            f"{len(orphans)} embedded databases whose data dir is gone: {shown}{more}",
            "if you no longer need them, stop any host using them and remove each with "
            f"rm -rf {orphans[0][0]} (and the others named)",
        )
    ]


async def check_database(host: HostSettings) -> list[Check]:
    """Connect and look at pgvector; an embedded server is started for a moment if needed,
    and is checked to let no one in without its password."""
    if host.database_url is not None:
        return await _inspect(host.database_url, "database")
    exposed = _exposed_secret(host.data_dir)  # looked at first: a start narrows the file
    server = EmbeddedPostgres(
        host.data_dir,
        port=host.embedded_database_port,
        shared_buffers_mb=host.embedded_database_shared_buffers_mb,
    )
    try:
        await asyncio.to_thread(server.start)
    except ConfigError as error:
        if "in use" in str(error):
            running = Check("database", "ok", f"embedded in {host.data_dir}; a running host has it")
            return [running, *(exposed or await check_embedded_access(host.data_dir))]
        return [Check("database", "fail", str(error), "see the message; `make run` sets it up")]
    try:
        checks = await _inspect(server.url, "database (embedded)")
        return checks + (exposed or await check_embedded_access(host.data_dir))
    finally:
        await asyncio.to_thread(server.stop)


def _exposed_secret(data_dir: Path) -> list[Check]:
    """A finding if the embedded database's password file may be read by other users."""
    secret = secret_file(data_dir)
    if not secret.exists() or (mode := stat.S_IMODE(secret.stat().st_mode)) == 0o600:
        return []
    return [
        Check(
            "database access",
            "fail",
            f"{secret} is mode {mode:o}: other users may have read the database password",
            f"chmod 600 {secret}, and delete it to have the next start make a new password",
        )
    ]


async def check_embedded_access(data_dir: Path) -> list[Check]:
    """The running embedded server refuses a connection without the password, on its socket
    and on its TCP port if it has one."""
    name = "database access"
    endpoints = listening_endpoints(data_dir)
    if not endpoints:
        return [Check(name, "warn", f"no server runs for {data_dir} to try", "start the host")]
    for address, port in endpoints:
        try:
            # an empty password, so none is looked up in PGPASSWORD or ~/.pgpass
            connection = await asyncpg.connect(
                host=address,
                port=port,
                user=SUPERUSER,
                password="",
                database="postgres",
                timeout=10,
            )
        except asyncpg.InvalidAuthorizationSpecificationError:
            continue
        except (OSError, TimeoutError, asyncpg.PostgresError) as error:
            return [Check(name, "warn", f"could not try {address}: {error}", "start the host")]
        await connection.close()
        return [
            Check(
                name,
                "fail",
                f"the embedded database at {address} lets anyone in without a password",
                "restart the host: each start closes it again",
            )
        ]
    where = " and ".join(address for address, _ in endpoints)
    secret = secret_file(data_dir)
    return [Check(name, "ok", f"{where}: no way in without the password (in {secret}, 0600)")]


async def _inspect(url: str, name: str) -> list[Check]:
    try:
        connection = await asyncpg.connect(async_url(url).replace("+asyncpg", "", 1), timeout=10)
    except (TimeoutError, OSError, asyncpg.PostgresError) as error:
        return [
            Check(
                name,
                "fail",
                f"cannot connect: {error}",
                "start the database, or correct SOUNDSPAN_DATABASE_URL",
            )
        ]
    try:
        version = await connection.fetchval("SHOW server_version")
        vector = await connection.fetchrow(
            "SELECT default_version, installed_version FROM pg_available_extensions"
            " WHERE name = 'vector'"
        )
    finally:
        await connection.close()
    checks = [Check(name, "ok", f"PostgreSQL {version}")]
    if vector is None:
        checks.append(
            Check(
                "pgvector",
                "fail",
                "the server has no pgvector extension",
                "install pgvector on the server, or use the pgvector/pgvector image",
            )
        )
        return checks
    available = vector["installed_version"] or vector["default_version"]
    numbers = tuple(int(part) for part in available.split(".")[:2])
    if numbers < PGVECTOR_WANTED:
        checks.append(
            Check(
                "pgvector",
                "fail",
                f"pgvector {available}; 0.8 or newer is needed",
                "upgrade pgvector (ALTER EXTENSION vector UPDATE after installing it)",
            )
        )
    else:
        state = "installed" if vector["installed_version"] else "created at the host's start"
        checks.append(Check("pgvector", "ok", f"pgvector {available} ({state})"))
    return checks
