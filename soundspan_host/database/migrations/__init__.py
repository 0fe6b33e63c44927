"""Schema migrations with alembic: the core revisions here, plugins add theirs by hook."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

HERE = Path(__file__).parent
VERSION_TABLE = "alembic_version"
MIGRATION_LOCK_ID = 0x50A5D5  # any constant shared by every soundspan process


def upgrade_to_head(connection: Connection, plugin_migrations: Sequence[Path] = ()) -> None:
    """Apply every pending revision, core and plugins' (each plugin a branch of its own).

    Under an advisory lock, so a host and its workers starting together migrate once. A
    plugin switched off (or uninstalled) leaves its branch's revision in the version table
    where alembic, which knows only the scripts it is given, would refuse to start: that row
    is set aside for the upgrade and put back, so its tables and revision wait, untouched,
    for the plugin to come back.
    """
    connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
    config = _config(connection, plugin_migrations)
    absent = _revisions_without_scripts(connection, ScriptDirectory.from_config(config))
    _set_version_rows(connection, absent, present=False)
    command.upgrade(config, "heads")
    _set_version_rows(connection, absent, present=True)


def missing_heads(connection: Connection, plugin_migrations: Sequence[Path] = ()) -> list[str]:
    """The latest revisions of these migrations that the database is not at: none once the
    host has migrated it (a worker, which may not migrate, waits for that)."""
    scripts = ScriptDirectory.from_config(_config(connection, plugin_migrations))
    stored = set(_stored_revisions(connection))
    return sorted(head for head in scripts.get_heads() if head not in stored)


def _config(connection: Connection, plugin_migrations: Sequence[Path]) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    locations = [HERE / "versions", *plugin_migrations]
    config.set_main_option("version_locations", " ".join(str(path) for path in locations))
    config.set_main_option("path_separator", "space")
    config.attributes["connection"] = connection
    return config


def _stored_revisions(connection: Connection) -> list[str]:
    if not inspect(connection).has_table(VERSION_TABLE):
        return []
    return list(connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())


def _revisions_without_scripts(connection: Connection, scripts: ScriptDirectory) -> list[str]:
    """The revisions the database is at whose scripts are not among those given."""
    known = {script.revision for script in scripts.walk_revisions()}
    return sorted(set(_stored_revisions(connection)) - known)


def _set_version_rows(connection: Connection, revisions: list[str], *, present: bool) -> None:
    for revision in revisions:
        statement = (
            f"INSERT INTO {VERSION_TABLE} (version_num) VALUES (:revision)"
            if present
            else f"DELETE FROM {VERSION_TABLE} WHERE version_num = :revision"
        )
        connection.execute(text(statement), {"revision": revision})
