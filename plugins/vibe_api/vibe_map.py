"""A 2-D map of the library per analyzer: PCA of the embeddings (UMAP when chosen and
installed), computed on first request, kept as ready-to-send JSON and refreshed in the
background when analyzed tracks come, move or go. Each computation runs in a process of its
own (map_process.py); the host only fetches the labels and keeps the answer."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from soundspan_hooks import AnalyzerInfo, HostContext
from soundspan_hooks.coordinator import RefreshCoordinator
from soundspan_plugins.shared.pool import ModelPool, WorkerCrashed
from soundspan_plugins.vibe_api import map_process, queries
from soundspan_plugins.vibe_api.exclusions import NOTHING_EXCLUDED, Exclusions
from soundspan_plugins.vibe_api.handling import tag_keeper

log = logging.getLogger(__name__)

# labels fetched per call of the tag keeper's hook: a call's rows become a dict on the event
# loop, so each call is kept short (MusiCNN's labels took 2.6 s for 100,000 contents, mostly
# PostgreSQL's; bench/RESULTS.md), with other requests served between calls
LABELS_PER_CALL = 10_000


@dataclass(frozen=True)
class LibraryMap:
    signature: tuple[Any, ...]
    body: bytes  # the JSON answer, encoded once: a 100k-track map is megabytes


class LibraryMaps:
    """The maps of one host, one per analyzer that someone has looked at; tracks the rules
    exclude are left off."""

    def __init__(
        self,
        host: HostContext,
        projection: str,
        refresh_seconds: float,
        exclusions: Exclusions = NOTHING_EXCLUDED,
    ) -> None:
        self.host = host
        self.exclusions = exclusions
        self.method = _method(projection)
        self._maps: dict[str, LibraryMap] = {}
        self._analyzers: dict[str, AnalyzerInfo] = {}
        self._outdated: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        # a failing map is caught in _refresh (the others go on): this never backs off
        self.refresher = RefreshCoordinator(
            "vibe map refresher",
            self.refresh,
            logger=log,
            interval=refresh_seconds,
            retry=refresh_seconds,
            first_refresh=refresh_seconds,
        )

    async def body(self, analyzer: AnalyzerInfo) -> bytes:
        """The analyzer's map as JSON; the first call computes it, later ones are instant."""
        if analyzer.name not in self._maps:
            async with self._lock(analyzer.name):
                if analyzer.name not in self._maps:  # unless a request before us made it
                    await self._first(analyzer)
        return self._maps[analyzer.name].body

    async def _first(self, analyzer: AnalyzerInfo) -> None:
        """The first computation, for a request: a map process that cannot start or dies is a
        503 that says so (the process's error is logged), never a request left hanging."""
        signature = await queries.embeddings_signature(self.host.engine, analyzer.embedding_table)
        try:
            await self._compute(analyzer, signature)
        except (WorkerCrashed, map_process.DrawingLost) as error:
            log.warning("vibe map of %s not drawn: %s", analyzer.name, error)
            raise web.HTTPServiceUnavailable(
                reason=f"the library map of {analyzer.name} could not be drawn: {error};"
                " asking again tries anew"
            ) from None
        self._analyzers[analyzer.name] = analyzer

    def outdate(self, analyzer: str) -> None:
        """A result was stored: recompute at the next refresh even if the counts still match."""
        self._outdated.add(analyzer)

    async def refresh(self) -> None:
        """Recompute the maps whose embeddings changed since they were drawn (or that a stored
        result outdated), side by side: one analyzer's map never waits for another's. A map
        that cannot be recomputed keeps being served as it was."""
        await asyncio.gather(*(self._refresh(info) for info in list(self._analyzers.values())))

    async def _refresh(self, analyzer: AnalyzerInfo) -> None:
        try:
            signature = await queries.embeddings_signature(
                self.host.engine, analyzer.embedding_table
            )
            if analyzer.name in self._outdated or signature != self._maps[analyzer.name].signature:
                async with self._lock(analyzer.name):
                    await self._compute(analyzer, signature)
        except Exception:  # the database may be away; the old map stays
            log.warning("vibe map of %s not refreshed", analyzer.name, exc_info=True)

    def _lock(self, analyzer: str) -> asyncio.Lock:
        return self._locks.setdefault(analyzer, asyncio.Lock())

    async def _compute(self, analyzer: AnalyzerInfo, signature: tuple[Any, ...]) -> None:
        """`signature` is taken before the embeddings are read: a change made while they are
        read shows as a new signature at the next refresh."""
        started = time.monotonic()
        self._outdated.discard(analyzer.name)
        # one thread for its BLAS: the map is background work, the other cores are the
        # requests'; a fresh process each time, so its memory goes back when it ends
        drawing = ModelPool(
            "vibe map", 1, map_process.Drawing, threads=1, doing="drawing the library map"
        )
        try:
            points = await drawing.run(
                map_process.draw,
                self.host.engine.url.render_as_string(hide_password=False),
                analyzer.embedding_table,
                self.exclusions,
                self.method,
            )
            await self._label(drawing, points)
            answer = {"analyzer": analyzer.name, "method": self.method, "computed_at": time.time()}
            body = await _answer(drawing, answer)
        finally:
            await drawing.close()
        self._maps[analyzer.name] = LibraryMap(signature, body)
        log.info(
            "vibe map of %s: %d tracks by %s in %.1f s",
            analyzer.name,
            points,
            self.method,
            time.monotonic() - started,
        )

    async def _label(self, drawing: ModelPool, points: int) -> None:
        """Hand the map's process each point's label, LABELS_PER_CALL contents at a time: the
        labels come from another plugin's hook, which only the host can call, and a million at
        once would be one long step on the event loop (reading the rows, pickling them)."""
        keeper = tag_keeper(self.host)
        if keeper is None:
            return
        for start in range(0, points, LABELS_PER_CALL):
            content_ids = await drawing.run(map_process.contents, start, start + LABELS_PER_CALL)
            labels = await keeper.content_labels(content_ids)
            await drawing.run(map_process.add_labels, labels)


async def _answer(drawing: ModelPool, answer: dict[str, Any]) -> bytes:
    """The JSON the map's process writes for `answer`, read in a thread (see write_answer)."""
    descriptor, path = tempfile.mkstemp(prefix="soundspan-vibe-map-", suffix=".json")
    os.close(descriptor)
    try:
        await drawing.run(map_process.write_answer, answer, path)
        return await asyncio.to_thread(Path(path).read_bytes)
    finally:
        os.unlink(path)


def umap_installed() -> bool:
    return importlib.util.find_spec("umap") is not None


def _method(projection: str) -> str:
    if projection == "auto":
        return "umap" if umap_installed() else "pca"
    return projection


@contextlib.asynccontextmanager
async def refreshing(maps: LibraryMaps):
    """The maps, refreshed every `refresh_seconds` while the context lasts."""
    maps.refresher.start()
    try:
        yield maps
    finally:
        await maps.refresher.stop()
