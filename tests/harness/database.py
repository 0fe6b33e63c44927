"""Reaching the session's embedded PostgreSQL (the `postgres_server` fixture) directly."""

from __future__ import annotations

from sqlalchemy import make_url

from soundspan_host.database.embedded import EmbeddedPostgres


def database_url_for(server: EmbeddedPostgres, database: str) -> str:
    """A URL (password included) to `database` on `server`, as a user would write it."""
    return (
        make_url(server.url)
        .set(drivername="postgresql", database=database)
        .render_as_string(hide_password=False)
    )
