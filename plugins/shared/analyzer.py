"""The skeleton the built-in analyzers share: a model in a process pool analyzes each track,
and its result is one row per content in the analyzer's own table, replaced on re-analysis.

A subclass says which pool runs, what a worker process is handed for a track and how its
answer becomes a row; reading the row back for GET /api/tracks/{id} is the same for all.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from soundspan_hooks import AnalyzerInfo, HostContext, StoreResult, TrackFile, UnreadableTrack
from soundspan_plugins.shared.audio import UnreadableAudio
from soundspan_plugins.shared.pool import ModelPool


class PooledAnalyzer(ABC):
    """An analyzer (soundspan_hooks.Analyzer) whose model runs in a ModelPool."""

    name: ClassVar[str]
    results_table: ClassVar[str]  # (content_id primary key, ..., analyzed_at), `<name>_...`
    casts: ClassVar[Mapping[str, str]] = {}  # column -> SQL type its JSON text is cast to
    detail_columns: ClassVar[tuple[str, ...]]  # shown by details(), with analyzed_at

    def __init__(self, host: HostContext) -> None:
        self.host = host

    @abstractmethod
    def info(self) -> AnalyzerInfo: ...

    @abstractmethod
    def pool(self) -> ModelPool | None:
        """The running pool; None while the model loads (no job is handed over then)."""

    @abstractmethod
    def task(self, track: TrackFile) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        """What a worker process runs for a track: a function of the file's path, and the
        arguments that follow the path."""

    @abstractmethod
    def result_row(self, result: Any) -> dict[str, Any]:
        """The columns of the result row (content_id aside) for what the worker returned."""

    async def analyze(self, track: TrackFile) -> StoreResult:
        pool = self.pool()
        if pool is None:  # retried: the worker takes jobs only from a ready analyzer
            raise RuntimeError(f"{self.name}'s worker processes are not running")
        function, arguments = self.task(track)
        try:
            result = await pool.run(function, str(track.path), *arguments)
        except UnreadableAudio as error:
            raise UnreadableTrack(error.reason) from None
        row = {"content_id": track.content_id, **self.result_row(result)}
        statement = self._upsert(tuple(row))

        async def store(connection: AsyncConnection) -> None:
            await connection.execute(statement, row)

        return store

    def _upsert(self, columns: tuple[str, ...]) -> Any:
        values = [
            f"CAST(:{column} AS {self.casts[column]})" if column in self.casts else f":{column}"
            for column in columns
        ]
        updates = [f"{column} = excluded.{column}" for column in columns if column != "content_id"]
        return text(
            f"INSERT INTO {self.results_table} ({', '.join(columns)})"
            f" VALUES ({', '.join(values)})"
            f" ON CONFLICT (content_id) DO UPDATE SET {', '.join(updates)}, analyzed_at = now()"
        )

    async def details(self, content_id: str) -> dict | None:
        async with self.host.engine.connect() as connection:
            row = (
                await connection.execute(
                    text(
                        f"SELECT {', '.join(self.detail_columns)}, analyzed_at"
                        f" FROM {self.results_table} WHERE content_id = :content_id"
                    ),
                    {"content_id": content_id},
                )
            ).first()
        if row is None:
            return None
        shown = dict(row._mapping)
        shown["analyzed_at"] = row.analyzed_at.isoformat()
        return self.shown(shown)

    def shown(self, details: dict[str, Any]) -> dict[str, Any]:
        """The details as clients see them; a subclass may reshape a column."""
        return details
