"""CLAP as the host keeps it: its state (downloading, loading, ready), its analysis in the
pool, and text placed in its space by the text tower's process (soundspan_hooks.EmbedsText)."""

from __future__ import annotations

import json
from typing import Any

from soundspan_hooks import AnalyzerInfo, TextEmbedding, TrackFile
from soundspan_plugins.clap.runtime import (
    DIMENSION,
    RUNTIME,
    ClapRuntime,
    settings_of,
    worker_share,
)
from soundspan_plugins.clap.settings import NAME
from soundspan_plugins.clap.text_tower import embed_query, text_tower_state
from soundspan_plugins.clap.versions import model_version
from soundspan_plugins.shared.analyzer import PooledAnalyzer
from soundspan_plugins.shared.pool import ModelPool

# with trained weights loaded CLAP answers searches and similar lists that name no analyzer:
# its text tower understands any words, MusiCNN's tags only fifty (MusiCNN ranks 10)
TRAINED_SEARCH_RANK = 20


class ClapAnalyzer(PooledAnalyzer):
    """A 512-d text-audio embedding per track, and text queries embedded for search."""

    name = NAME
    results_table = "clap_results"
    casts = {"embedding": "vector"}
    detail_columns = ("model_id", "windows", "decoder", "analyzed_seconds", "capped")

    def info(self) -> AnalyzerInfo:
        settings = settings_of(self.host)
        runtime = self.host.app.get(RUNTIME)
        share = worker_share(self.host, runtime)
        download = None
        if runtime is None:
            state, reason = "loading", None
        elif runtime.pool is None and runtime.reason is not None:
            state, reason = "unavailable", runtime.reason
        elif runtime.download is not None:
            state, reason, download = "downloading", None, runtime.download.as_status()
        elif runtime.text_tower is None or (runtime.pool is None and share.workers > 0):
            state, reason = "loading", None
        else:
            state, reason = "ready", None
        trained = runtime.trained if runtime else False
        return AnalyzerInfo(
            name=NAME,
            version=model_version(settings.model, settings.max_windows, settings.precision),
            model_id=runtime.model_id if runtime else settings.model,
            trained=trained,
            dimension=DIMENSION,
            device=runtime.device if runtime else settings.device,
            state=state,  # type: ignore[arg-type]
            reason=reason,
            embedding_table=self.results_table,
            workers=share.workers,
            workers_from=share.explained,
            poll_interval=settings.sleep_interval,
            download=download,
            detail=_preparing(runtime) or _about_the_towers(runtime),
            search_rank=TRAINED_SEARCH_RANK if trained and state == "ready" else 0,
        )

    def pool(self) -> ModelPool | None:
        runtime = self.host.app.get(RUNTIME)
        return runtime.pool if runtime is not None else None

    def task(self, track: TrackFile) -> tuple[Any, tuple[Any, ...]]:
        from soundspan_plugins.clap.worker import embed_file

        settings = settings_of(self.host)
        return embed_file, (
            settings.max_windows,
            settings.batch_size,
            settings.max_audio_minutes * 60,
        )

    def result_row(self, result: Any) -> dict[str, Any]:
        runtime = self.host.app[RUNTIME]
        settings = runtime.settings
        return {
            "model_id": runtime.model_id,
            "version": model_version(settings.model, settings.max_windows, settings.precision),
            "embedding": json.dumps(result.embedding),
            "windows": result.windows,
            "decoder": result.decoder,  # which decoder read the track; NULL for older results
            "analyzed_seconds": result.analyzed_seconds,
            "capped": result.capped,
        }

    async def embed_text(self, text: str) -> TextEmbedding | None:
        runtime = self.host.app.get(RUNTIME)
        if runtime is None or runtime.text_tower is None:
            return None
        vector = await runtime.text_tower.run(embed_query, text)
        return TextEmbedding(analyzer=NAME, vector=tuple(vector))


def _about_the_towers(runtime: ClapRuntime | None) -> str | None:
    """Why the audio tower is not the one asked for, and whether the text tower is loaded."""
    if runtime is None:
        return None
    text = runtime.text_tower
    loaded = text_tower_state(text, runtime.settings.idle_minutes) if text is not None else None
    return "; ".join(note for note in (runtime.detail, loaded) if note) or None


def _preparing(runtime: ClapRuntime | None) -> str | None:
    if runtime is None or runtime.preparing is None:
        return None
    return f"preparing the model: {runtime.preparing}"
