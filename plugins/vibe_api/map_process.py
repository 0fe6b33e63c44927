"""The library map's own process: it reads the embeddings, projects them to 2-D (PCA, or UMAP
when chosen) and encodes the JSON answer, so that none of it holds the host's event loop and
its memory goes back to the system when the process ends (issue 27: at a million tracks the
map took 53 s of the host's CPU, its requests stalled up to 1.8 s, and 1 GB stayed).

The host runs the steps here through shared/pool.py's ModelPool (one spawned worker, whose
"model" is a Drawing): `draw`, then `contents` and `add_labels` chunk by chunk (the labels come
from another plugin's hook, which only the host can call), then `write_answer`.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from soundspan_plugins.vibe_api import queries
from soundspan_plugins.vibe_api.exclusions import Exclusions

# what pg_stat_activity shows for the process's connection (with its pid: over a Unix socket
# nothing else tells which process reads the whole embedding table)
APPLICATION_NAME = "soundspan vibe map"
CONNECT_TIMEOUT_SECONDS = 10  # as the host's own engine

Points = tuple[list[str], list[str], np.ndarray]  # track ids, content ids, coordinates
Projection = Callable[[AsyncEngine, str, Exclusions], Awaitable[Points]]


class DrawingLost(RuntimeError):
    """The map's process was replaced between two steps (killed while the host fetched
    labels): what it had drawn is gone."""


@dataclass
class Drawing:
    """What the map's process keeps between the host's calls: the points and their labels."""

    track_ids: list[str] = field(default_factory=list)
    content_ids: list[str] = field(default_factory=list)
    coordinates: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    labels: dict[str, str] = field(default_factory=dict)
    drawn: bool = False

    def ensure_drawn(self) -> None:
        if not self.drawn:
            raise DrawingLost(
                "the vibe map process was replaced while the map was being drawn (killed?)"
            )


def draw(
    drawing: Drawing, database_url: str, table: str, exclusions: Exclusions, method: str
) -> int:
    """Read every present embedding the rules keep and project it; the number of points."""
    project = umap_projection if method == "umap" else pca
    drawing.track_ids, drawing.content_ids, drawing.coordinates = asyncio.run(
        _projected(database_url, project, table, exclusions)
    )
    drawing.drawn = True
    return len(drawing.track_ids)


def contents(drawing: Drawing, start: int, stop: int) -> list[str]:
    """The content ids of points `start` to `stop`, whose labels the host fetches next."""
    drawing.ensure_drawn()
    return drawing.content_ids[start:stop]


def add_labels(drawing: Drawing, labels: dict[str, str]) -> None:
    """Labels by content id, one chunk of the tag keeper's answers."""
    drawing.ensure_drawn()
    drawing.labels.update(labels)


def write_answer(drawing: Drawing, answer: dict[str, Any], path: str) -> None:
    """The map's JSON into the file at `path`: `answer`'s keys, then every point, placed in the
    unit square. A file, not the pipe: the host reads it back in a thread, and a read releases
    the GIL, where unpickling a million points' 92 MB held it 0.1-0.17 s on 2 loaded cores."""
    drawing.ensure_drawn()
    labels = drawing.labels
    points = [
        {"id": track_id, "x": x, "y": y, "label": labels.get(content_id)}
        for track_id, content_id, (x, y) in zip(
            drawing.track_ids,
            drawing.content_ids,
            fit_square(drawing.coordinates).tolist(),
            strict=True,
        )
    ]
    with open(path, "wb") as body:
        body.write(json.dumps({**answer, "points": points}).encode())


async def _projected(
    database_url: str, project: Projection, table: str, exclusions: Exclusions
) -> Points:
    # NullPool: one connection at a time, closed with the engine; the process is short-lived
    engine = create_async_engine(
        database_url,
        poolclass=NullPool,
        connect_args={
            "timeout": CONNECT_TIMEOUT_SECONDS,
            "server_settings": {"application_name": f"{APPLICATION_NAME} (pid {os.getpid()})"},
        },
    )
    try:
        return await project(engine, table, exclusions)
    finally:
        await engine.dispose()


async def pca(engine: AsyncEngine, table: str, exclusions: Exclusions) -> Points:
    """Principal components in two streaming passes, so memory stays flat at any size:
    the first gathers the mean and covariance, the second projects."""
    count, total, products = 0, None, None
    async for _, _, vectors in queries.present_embeddings(engine, table, exclusions=exclusions):
        batch = vectors.astype(np.float64)
        count += len(batch)
        total = batch.sum(axis=0) if total is None else total + batch.sum(axis=0)
        products = batch.T @ batch if products is None else products + batch.T @ batch
    if not count:
        return [], [], np.zeros((0, 2))
    mean = total / count
    covariance = products / count - np.outer(mean, mean)
    _, eigenvectors = np.linalg.eigh(covariance)  # ascending: the last two are the widest
    axes = eigenvectors[:, [-1, -2]]
    axes *= np.sign(axes[np.abs(axes).argmax(axis=0), [0, 1]])  # the same map every time
    track_ids, content_ids, parts = [], [], []
    async for tracks, contents_read, vectors in queries.present_embeddings(
        engine, table, exclusions=exclusions
    ):
        track_ids += tracks
        content_ids += contents_read
        parts.append((vectors - mean) @ axes)
    return track_ids, content_ids, np.concatenate(parts)


async def umap_projection(engine: AsyncEngine, table: str, exclusions: Exclusions) -> Points:
    """UMAP (cosine) of every embedding at once: it needs them all in memory."""
    import umap  # only when chosen and installed (umap-learn)

    track_ids, content_ids, parts = [], [], []
    async for tracks, contents_read, vectors in queries.present_embeddings(
        engine, table, exclusions=exclusions
    ):
        track_ids += tracks
        content_ids += contents_read
        parts.append(vectors)
    if len(track_ids) < 3:
        return track_ids, content_ids, np.zeros((len(track_ids), 2))
    reducer = umap.UMAP(n_components=2, metric="cosine", random_state=0)
    return track_ids, content_ids, reducer.fit_transform(np.concatenate(parts))


def fit_square(coordinates: np.ndarray) -> np.ndarray:
    """Centred in [-1, 1] on both axes with one scale, so distances keep their proportions."""
    if not len(coordinates):
        return coordinates
    centred = coordinates - (coordinates.max(axis=0) + coordinates.min(axis=0)) / 2
    reach = np.abs(centred).max()
    return np.round(centred / reach if reach > 0 else centred, 4)
