"""Which analysis workers are at work, and with which model version.

A worker claims only the jobs of its own version, so one left on an old model (a GPU box not
yet upgraded) silently takes nothing: each worker keeps a row here fresh while it runs, and
the host's status names the ones whose version is not its own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

# a worker not seen for this long has stopped: it is no longer shown, and its row is purged
WORKER_SEEN_MINUTES = 5


class WorkerRegistry:
    """One worker identity's row per analyzer (a host process runs several analyzers)."""

    def __init__(self, engine: AsyncEngine, owner: str) -> None:
        self.engine = engine
        self.owner = owner

    async def seen_working(self, analyzer: str, version: str) -> None:
        """Record that this worker works with `version` of `analyzer` now; rows of workers
        unseen for WORKER_SEEN_MINUTES are purged meanwhile."""
        async with self.engine.begin() as connection:
            await connection.execute(
                text(
                    "DELETE FROM analysis_workers"
                    " WHERE last_seen < now() - make_interval(mins => :minutes)"
                ),
                {"minutes": WORKER_SEEN_MINUTES},
            )
            await connection.execute(
                text(
                    "INSERT INTO analysis_workers (owner, analyzer, version, hostname, last_seen)"
                    " VALUES (:owner, :analyzer, :version, :hostname, now())"
                    " ON CONFLICT (owner, analyzer) DO UPDATE SET version = excluded.version,"
                    " last_seen = excluded.last_seen"
                ),
                {
                    "owner": self.owner,
                    "analyzer": analyzer,
                    "version": version,
                    "hostname": os.uname().nodename,
                },
            )

    async def stopped_working(self, analyzer: str) -> None:
        """Leave the registry: a worker stopped cleanly is not shown as outdated."""
        async with self.engine.begin() as connection:
            await connection.execute(
                text("DELETE FROM analysis_workers WHERE owner = :owner AND analyzer = :analyzer"),
                {"owner": self.owner, "analyzer": analyzer},
            )


async def outdated_workers(
    engine: AsyncEngine, analyzer_versions: Mapping[str, str]
) -> dict[str, list[dict]]:
    """Per analyzer, the workers seen in the last WORKER_SEEN_MINUTES whose model version is
    not `analyzer_versions[analyzer]` (the host's): they take none of its jobs.
    `[{"worker": owner, "version": str, "last_seen": epoch seconds}]`, latest seen first."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT analyzer, owner, version, extract(epoch FROM last_seen) AS last_seen"
                " FROM analysis_workers"
                " WHERE last_seen >= now() - make_interval(mins => :minutes)"
                " AND analyzer = ANY(:analyzers)"
                " ORDER BY analyzer, last_seen DESC, owner"
            ),
            {"minutes": WORKER_SEEN_MINUTES, "analyzers": list(analyzer_versions)},
        )
        outdated: dict[str, list[dict]] = {}
        for row in rows:
            if row.version != analyzer_versions[row.analyzer]:
                outdated.setdefault(row.analyzer, []).append(
                    {"worker": row.owner, "version": row.version, "last_seen": float(row.last_seen)}
                )
        return outdated
