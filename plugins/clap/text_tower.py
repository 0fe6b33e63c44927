"""CLAP's text tower in a process of its own: started by a text search, stopped after
`[clap] idle_minutes` without one, so the host itself never imports torch on a CPU.

Imported, torch and transformers cost a process about 370 MiB, and a search pages in most of
the text tower's weights (about 340 MiB more with roberta-base). In the host they stayed for
good, the imports even after the model was let go; in a process of their own they go back with
it. The first search after a rest waits for the process to start (seconds). At start-up the
tower is loaded once in a short-lived process (text_tower_facts) that says whether it is a
512-d, trained model, and ends.

This module imports neither torch nor transformers: the host imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from soundspan_plugins.clap.errors import ClapUnavailable
from soundspan_plugins.shared.pool import ModelPool, idle_seconds

if TYPE_CHECKING:
    from soundspan_plugins.clap.loading import LoadedClap
    from soundspan_plugins.clap.worker import ModelSource


@dataclass(frozen=True)
class TextTowerFacts:
    """What loading the text tower told: all the host keeps of it between searches."""

    model_id: str
    trained: bool
    untrained_reason: str | None
    embedding_dim: int
    cuda: bool  # whether torch sees a GPU here: the audio tower's device on `auto`


def text_tower_facts(source: ModelSource) -> TextTowerFacts | str:
    """Load the text tower and say what it is, or why it cannot load (ClapUnavailable's
    message: run in a process of its own, whose exceptions must pickle)."""
    import torch

    try:
        info = load_text_model(source).info
    except ClapUnavailable as error:
        return str(error)
    cuda = torch.cuda.is_available()
    return TextTowerFacts(
        info.model_id, info.trained, info.untrained_reason, info.embedding_dim, cuda
    )


def load_text_model(source: ModelSource) -> LoadedClap:
    """The text tower as a search runs it: on the CPU, one thread."""
    from soundspan_plugins.clap.loading import load_clap

    return load_clap(
        source.model,
        tokenizer=source.tokenizer,
        towers=("text",),
        threads=1,
        allow_download=source.allow_download,
        cache_dir=source.cache_dir,
        allow_unsafe_checkpoint=source.allow_unsafe_checkpoint,
    )


def embed_query(text_tower: LoadedClap, text: str) -> list[float]:
    """In the text process: the unit-length embedding of one text query."""
    from soundspan_plugins.clap.embedding import embed_text

    [vector] = embed_text(text_tower, [text])
    return vector.tolist()


def text_pool(source: ModelSource, idle_minutes: float) -> ModelPool:
    """The text tower's process, not started: the first search starts it; it stops after
    `idle_minutes` without one (0: it stays). One process: searches take turns in it."""
    return ModelPool(
        "CLAP text tower",
        1,
        load_text_model,
        (source,),
        doing="embedding a text query",
        idle_seconds=idle_seconds(idle_minutes),
    )


def text_tower_state(pool: ModelPool, idle_minutes: float) -> str | None:
    """A line for the status while the text tower's process holds its memory; None while it
    rests (the next search starts it)."""
    if not pool.started:
        return None
    stops = f", stopped after {idle_minutes:g} min without a search" if idle_minutes else ""
    return f"the text tower is loaded (a process of its own{stops})"
