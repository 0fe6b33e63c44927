"""Analyzers as the host keeps them: one object each, from the `soundspan_analyzers` hook.

The host asks every plugin once, at start, and keeps `host.analyzers[name]`; the queue's
workers, the API and worker mode then choose an analyzer by what it can do (the capabilities
below, found with isinstance) and by its `AnalyzerInfo.search_rank`, never by its name.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar, runtime_checkable

from soundspan_hooks.types import AnalyzerInfo, StoreResult, TagSearch, TextEmbedding, TrackFile


@runtime_checkable
class Analyzer(Protocol):
    """What every analyzer does: describe itself, analyze a track, show a stored result."""

    name: str  # the queue's and the API's name for it, e.g. "musicnn"

    def info(self) -> AnalyzerInfo:
        """How it stands right now (model, state, workers); cheap, called per request."""
        ...

    async def analyze(self, track: TrackFile) -> StoreResult:
        """Analyze one track; resolve to a StoreResult that writes the result, run by the host
        in the transaction that completes the job. Raise UnreadableTrack for a file that will
        never analyze; any other exception is retried."""
        ...

    async def details(self, content_id: str) -> dict | None:
        """Its public result for a content (shown under its name in GET /api/tracks/{id})."""
        ...


@runtime_checkable
class EmbedsText(Protocol):
    """An analyzer whose embedding space text can be placed in (CLAP's text tower)."""

    async def embed_text(self, text: str) -> TextEmbedding | None:
        """The text in this analyzer's space; None while it cannot (its model is not loaded)."""
        ...


@runtime_checkable
class KeepsTags(Protocol):
    """An analyzer that stores named tags per content (MusiCNN's genres, moods, instruments)."""

    async def content_tags(self, content_ids: list[str]) -> dict[str, list[str]]:
        """Each content's top tags, likeliest first (why a result was chosen); untagged ones
        are left out."""
        ...

    async def content_labels(self, content_ids: list[str]) -> dict[str, str]:
        """A short label per content, such as its top genre, to colour maps and lists by."""
        ...

    async def search_tags(self, text: str, limit: int) -> TagSearch:
        """Contents ranked by the tags a text names: search where no analyzer embeds text."""
        ...


Capability = TypeVar("Capability")


def by_search_rank(analyzers: Iterable[Analyzer], capability: type[Capability]) -> list[Capability]:
    """The analyzers that have a capability, the one that should answer first first: highest
    `search_rank`, then by name."""
    able = [analyzer for analyzer in analyzers if isinstance(analyzer, capability)]
    return sorted(able, key=lambda analyzer: (-analyzer.info().search_rank, analyzer.name))
