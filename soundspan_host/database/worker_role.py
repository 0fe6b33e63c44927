"""What the workers' role may do: read the library, claim and finish jobs, keep its row in the
worker registry, and write its analyzers' own tables; never DDL, never another table, never a
superuser's COPY ... PROGRAM.

The embedded database makes the role (embedded_access.WORKER_ROLE) with a password of its own;
on an external server a user makes it once (the README's Scale-out says how). The host grants
at every start, after migrations, so a table a plugin added since is covered.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from soundspan_host.database.embedded_access import WORKER_ROLE

log = logging.getLogger(__name__)

# the host's tables a worker writes, and how: it claims, renews and finishes jobs (adds none),
# and keeps its own row in the registry
HOST_TABLE_WRITES = {
    "analysis_jobs": "UPDATE",
    "analysis_workers": "INSERT, UPDATE, DELETE",
}


async def grant_worker_access(engine: AsyncEngine, analyzers: Iterable[str]) -> None:
    """Grant the workers' role, where one exists, what a worker does for these analyzers.

    An analyzer's tables are those named after it (`musicnn_results`, `clap_...`): the
    convention every analyzer's migrations follow."""
    try:
        async with engine.begin() as connection:
            exists = await connection.scalar(
                text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": WORKER_ROLE}
            )
            if not exists:
                return
            names = list(analyzers)
            analyzer_tables = (
                await connection.scalars(
                    text(
                        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                        " AND tablename LIKE ANY (:patterns)"
                    ),
                    {"patterns": [f"{_like_literal(name)}\\_%" for name in names]},
                )
            ).all()
            database = await connection.scalar(text("SELECT current_database()"))
            writes = [
                f"GRANT {privileges} ON {_quoted(table)} TO {WORKER_ROLE}"
                for table, privileges in HOST_TABLE_WRITES.items()
            ]
            if analyzer_tables:
                tables = ", ".join(_quoted(table) for table in analyzer_tables)
                writes.append(f"GRANT INSERT, UPDATE, DELETE ON {tables} TO {WORKER_ROLE}")
            for statement in (
                f"GRANT CONNECT ON DATABASE {_quoted(database)} TO {WORKER_ROLE}",
                f"GRANT USAGE ON SCHEMA public TO {WORKER_ROLE}",
                f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public"
                f" FROM {WORKER_ROLE}",
                f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {WORKER_ROLE}",
                *writes,
                f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {WORKER_ROLE}",
            ):
                await connection.execute(text(statement))
    except DBAPIError as error:  # not the tables' owner, say: workers keep what they had
        log.warning(
            "could not grant the workers' role %s its tables (%s); grant them as the tables' "
            "owner, or workers for new analyzers will be refused",
            WORKER_ROLE,
            str(error.orig).splitlines()[0] if error.orig else error,
        )


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _like_literal(name: str) -> str:
    return name.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")
