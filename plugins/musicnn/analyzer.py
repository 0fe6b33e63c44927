"""MusiCNN as the host keeps it: its state, its analysis in the pool, and its tags, which
explain results, label the map and answer searches where no analyzer embeds text."""

from __future__ import annotations

import json
import re
from typing import Any

from sqlalchemy import text

from soundspan_hooks import AnalyzerInfo, ContentScore, TagSearch, TrackFile
from soundspan_plugins.musicnn.network import EMBEDDING_DIM, TAGS_BY_DATASET, ModelNotAvailable
from soundspan_plugins.musicnn.runtime import RUNTIME, model_version, settings_of
from soundspan_plugins.musicnn.settings import NAME
from soundspan_plugins.musicnn.tags import GENRE_TAGS
from soundspan_plugins.musicnn.worker import TrackTags, analyze_file
from soundspan_plugins.shared.analyzer import PooledAnalyzer
from soundspan_plugins.shared.pool import ModelPool

SEARCH_RANK = 10  # below CLAP with trained weights, whose text tower understands more words


class MusicnnAnalyzer(PooledAnalyzer):
    """Tags (50 probabilities), top tags and a 200-d embedding per track; it keeps tags
    (soundspan_hooks.KeepsTags)."""

    name = NAME
    results_table = "musicnn_results"
    casts = {"tags": "jsonb", "top_tags": "jsonb", "embedding": "vector"}
    detail_columns = (
        "model_id", "tags", "top_tags", "patches", "decoder", "analyzed_seconds", "capped",
    )  # fmt: skip

    def info(self) -> AnalyzerInfo:
        settings = settings_of(self.host)
        runtime = self.host.app.get(RUNTIME)
        try:
            version = model_version(settings.model, settings.precision)
        except (ModelNotAvailable, OSError) as error:
            return self._described(f"{settings.model}-missing", "unavailable", str(error))
        if runtime is not None and runtime.reason is not None:
            return self._described(version, "unavailable", runtime.reason)
        if runtime is None or runtime.loading:
            return self._described(version, "loading", None)
        return self._described(version, "ready", runtime.note)

    def _described(self, version: str, state: str, reason: str | None) -> AnalyzerInfo:
        settings = settings_of(self.host)
        runtime = self.host.app.get(RUNTIME)
        device = runtime.device if runtime else settings.device
        share = self.host.worker_share(NAME, on_gpu=device == "cuda")
        return AnalyzerInfo(
            name=NAME,
            version=version,
            model_id=settings.model,
            trained=True,  # the authors' published checkpoints, read from the musicnn wheel
            dimension=EMBEDDING_DIM,
            embedding_table=self.results_table,
            device=device,
            state=state,  # type: ignore[arg-type]
            reason=reason,
            workers=share.workers,
            workers_from=share.explained,
            poll_interval=settings.sleep_interval,
            search_rank=SEARCH_RANK,
        )

    def pool(self) -> ModelPool | None:
        runtime = self.host.app.get(RUNTIME)
        return runtime.pool if runtime is not None and runtime.card is not None else None

    def task(self, track: TrackFile) -> tuple[Any, tuple[Any, ...]]:
        settings = settings_of(self.host)
        return analyze_file, (settings.batch_size, settings.max_audio_minutes * 60)

    def result_row(self, result: TrackTags) -> dict[str, Any]:
        runtime = self.host.app[RUNTIME]
        assert runtime.card is not None
        settings = runtime.settings
        tags = dict(zip(runtime.card.tags, result.tag_probabilities, strict=True))
        top = sorted(tags.items(), key=lambda item: item[1], reverse=True)[: settings.top_tags]
        return {
            "model_id": runtime.card.model_id,
            "version": model_version(settings.model, settings.precision),
            "tags": json.dumps(tags),
            "top_tags": json.dumps(top),
            "embedding": json.dumps(result.embedding),
            "patches": result.patches,
            "decoder": result.decoder,  # which decoder read the track; NULL for older results
            "analyzed_seconds": result.analyzed_seconds,
            "capped": result.capped,
        }

    def shown(self, details: dict[str, Any]) -> dict[str, Any]:
        top = [{"tag": tag, "probability": score} for tag, score in details["top_tags"]]
        return details | {"top_tags": top}

    async def content_labels(self, content_ids: list[str]) -> dict[str, str]:
        """Each content's likeliest genre tag."""
        async with self.host.engine.connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT r.content_id, genre.tag FROM musicnn_results r CROSS JOIN LATERAL"
                    " (SELECT key AS tag FROM jsonb_each_text(r.tags) WHERE key = ANY(:genres)"
                    "  ORDER BY value::float DESC LIMIT 1) genre"
                    " WHERE r.content_id = ANY(:ids)"
                ),
                {"genres": sorted(GENRE_TAGS), "ids": content_ids},
            )
            return {content: tag for content, tag in rows}

    async def content_tags(self, content_ids: list[str]) -> dict[str, list[str]]:
        """Each content's top tags (as many as [musicnn] top_tags kept), likeliest first."""
        async with self.host.engine.connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT content_id, top_tags FROM musicnn_results WHERE content_id = ANY(:ids)"
                ),
                {"ids": content_ids},
            )
            return {content: [tag for tag, _ in top] for content, top in rows}

    async def search_tags(self, text_query: str, limit: int) -> TagSearch:
        """Contents ranked by the summed probability of the model's tags the query names."""
        vocabulary = TAGS_BY_DATASET[settings_of(self.host).model.split("_")[0]]
        matched = tags_named_in(text_query, vocabulary)
        if not matched:
            return TagSearch(analyzer="musicnn-tags", matched_tags=(), results=())
        score = " + ".join(f"(tags ->> :tag{index})::float" for index in range(len(matched)))
        async with self.host.engine.connect() as connection:
            rows = await connection.execute(
                text(
                    f"SELECT content_id, ({score}) / :count AS score FROM musicnn_results"
                    " WHERE EXISTS (SELECT 1 FROM library_tracks t"
                    " WHERE t.content_id = musicnn_results.content_id)"
                    " ORDER BY score DESC, content_id LIMIT :limit"
                ),
                {
                    **{f"tag{index}": tag for index, tag in enumerate(matched)},
                    "count": len(matched),
                    "limit": limit,
                },
            )
            results = tuple(ContentScore(content, float(score)) for content, score in rows)
        return TagSearch(analyzer="musicnn-tags", matched_tags=matched, results=results)


def tags_named_in(query: str, vocabulary: tuple[str, ...]) -> tuple[str, ...]:
    """The tags whose every word appears in the query ("chill jazz piano" -> chill, jazz)."""
    tokens = re.findall(r"[a-z0-9&-]+", query.lower().replace("hip hop", "hip-hop"))
    words = {
        part for token in tokens for part in (token, token.replace("-", ""), *token.split("-"))
    }
    named = []
    for tag in vocabulary:
        tag_words = re.findall(r"[a-z0-9&-]+", tag.lower())
        if all(word in words or word.replace("-", "") in words for word in tag_words):
            named.append(tag)
    return tuple(named)
