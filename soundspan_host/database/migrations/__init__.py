"""Schema migrations with alembic: the core revisions here, plugins add theirs by hook."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection

HERE = Path(__file__).parent


def upgrade_to_head(connection: Connection, plugin_migrations: Sequence[Path] = ()) -> None:
    """Apply every pending revision, core and plugins' (each plugin a branch of its own)."""
    config = Config()
    config.set_main_option("script_location", str(HERE))
    locations = [HERE / "versions", *plugin_migrations]
    config.set_main_option("version_locations", " ".join(str(path) for path in locations))
    config.set_main_option("path_separator", "space")
    config.attributes["connection"] = connection
    command.upgrade(config, "heads")
