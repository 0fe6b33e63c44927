"""A 2-D map of the library per analyzer: PCA of the embeddings (UMAP when chosen and
installed), computed on first request, kept as ready-to-send JSON and refreshed in the
background when analyzed tracks come, move or go."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from soundspan_hooks import AnalyzerInfo, HostContext
from soundspan_hooks.coordinator import RefreshCoordinator
from soundspan_plugins.vibe_api import queries
from soundspan_plugins.vibe_api.exclusions import NOTHING_EXCLUDED, Exclusions
from soundspan_plugins.vibe_api.handling import tag_keeper

log = logging.getLogger(__name__)


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
                    signature = await queries.embeddings_signature(
                        self.host.engine, analyzer.embedding_table
                    )
                    await self._compute(analyzer, signature)
                    self._analyzers[analyzer.name] = analyzer
        return self._maps[analyzer.name].body

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
        table = analyzer.embedding_table
        if self.method == "umap":
            track_ids, content_ids, coordinates = await _umap(self.host, table, self.exclusions)
        else:
            track_ids, content_ids, coordinates = await _pca(self.host, table, self.exclusions)
        keeper = tag_keeper(self.host)
        labels = content_ids and keeper and await keeper.content_labels(content_ids)
        answer = {"analyzer": analyzer.name, "method": self.method, "computed_at": time.time()}
        # 100k points take half a second to encode: not on the event loop
        body = await asyncio.to_thread(
            _encoded, answer, track_ids, content_ids, coordinates, labels or {}
        )
        self._maps[analyzer.name] = LibraryMap(signature, body)
        log.info(
            "vibe map of %s: %d tracks by %s in %.1f s",
            analyzer.name,
            len(track_ids),
            self.method,
            time.monotonic() - started,
        )


async def _pca(
    host: HostContext, table: str, exclusions: Exclusions = NOTHING_EXCLUDED
) -> tuple[list[str], list[str], np.ndarray]:
    """Principal components in two streaming passes, so memory stays flat at any size:
    the first gathers the mean and covariance, the second projects."""
    count, total, products = 0, None, None
    async for _, _, vectors in queries.present_embeddings(
        host.engine, table, exclusions=exclusions
    ):
        batch = vectors.astype(np.float64)
        batch_products = await asyncio.to_thread(np.matmul, batch.T, batch)
        count += len(batch)
        total = batch.sum(axis=0) if total is None else total + batch.sum(axis=0)
        products = batch_products if products is None else products + batch_products
    if not count:
        return [], [], np.zeros((0, 2))
    mean = total / count
    covariance = products / count - np.outer(mean, mean)
    _, eigenvectors = np.linalg.eigh(covariance)  # ascending: the last two are the widest
    axes = eigenvectors[:, [-1, -2]]
    axes *= np.sign(axes[np.abs(axes).argmax(axis=0), [0, 1]])  # the same map every time
    track_ids, content_ids, parts = [], [], []
    async for tracks, contents, vectors in queries.present_embeddings(
        host.engine, table, exclusions=exclusions
    ):
        track_ids += tracks
        content_ids += contents
        parts.append((vectors - mean) @ axes)
    return track_ids, content_ids, np.concatenate(parts)


async def _umap(
    host: HostContext, table: str, exclusions: Exclusions
) -> tuple[list[str], list[str], np.ndarray]:
    import umap  # only when chosen and installed (umap-learn)

    track_ids, content_ids, parts = [], [], []
    async for tracks, contents, vectors in queries.present_embeddings(
        host.engine, table, exclusions=exclusions
    ):
        track_ids += tracks
        content_ids += contents
        parts.append(vectors)
    if len(track_ids) < 3:
        return track_ids, content_ids, np.zeros((len(track_ids), 2))
    vectors = np.concatenate(parts)
    reducer = umap.UMAP(n_components=2, metric="cosine", random_state=0)
    return track_ids, content_ids, await asyncio.to_thread(reducer.fit_transform, vectors)


def _encoded(
    answer: dict[str, Any],
    track_ids: list[str],
    content_ids: list[str],
    coordinates: np.ndarray,
    labels: dict[str, str],
) -> bytes:
    points = [
        {"id": track_id, "x": x, "y": y, "label": labels.get(content_id)}
        for track_id, content_id, (x, y) in zip(
            track_ids, content_ids, _fit_square(coordinates).tolist(), strict=True
        )
    ]
    return json.dumps({**answer, "points": points}).encode()


def _fit_square(coordinates: np.ndarray) -> np.ndarray:
    """Centred in [-1, 1] on both axes with one scale, so distances keep their proportions."""
    if not len(coordinates):
        return coordinates
    centred = coordinates - (coordinates.max(axis=0) + coordinates.min(axis=0)) / 2
    reach = np.abs(centred).max()
    return np.round(centred / reach if reach > 0 else centred, 4)


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
