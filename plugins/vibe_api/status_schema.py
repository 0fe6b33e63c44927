"""What GET /api/vibe/status answers: each analyzer's model and progress, library totals, and
the exclude rules with what they leave out."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class Counts(BaseModel):
    done: int
    pending: int
    running: int
    failed: int


class ModelDownload(BaseModel):
    """An analyzer's model on its way from the hub."""

    file: str | None
    bytes_done: int
    bytes_total: int | None
    bytes_per_second: int
    eta_seconds: int | None


class QueueReason(BaseModel):
    reason: str = Field(description='e.g. "new or changed audio", "model updated: a -> b"')
    jobs: int


class OutdatedWorker(BaseModel):
    worker: str = Field(description="host:pid:id of the worker process")
    version: str
    last_seen: float = Field(description="Epoch seconds")


class AnalyzerStatus(BaseModel):
    name: str
    model_id: str
    trained: bool
    device: str
    state: Literal["ready", "loading", "downloading", "unavailable"]
    reason: str | None
    version: str
    dimension: int
    counts: Counts
    tracks_per_minute: float | None = Field(
        description="Tracks finished per minute over the current run (from its first finish to "
        "now); null with no run, or before its second finish."
    )
    audio_minutes_per_minute: float | None = Field(
        description="Minutes of audio analyzed per minute over the current run, whatever the "
        "tracks' lengths; null as tracks_per_minute."
    )
    audio_minutes_waiting: float = Field(
        description="Audio still to analyze (pending and running jobs); a track of unknown "
        "length counts as the library's mean."
    )
    eta_seconds: int | None = Field(
        description="Seconds the audio waiting needs at the run's audio pace; null when not "
        "measured yet or nothing waits."
    )
    run_started_at: float | None = Field(
        description="Epoch seconds of the current run's first finish; null when no run is on."
    )
    download: ModelDownload | None
    detail: str | None = Field(
        description="One line for people about the model, e.g. why a precision was refused."
    )
    workers: int = Field(
        description="Tracks this host analyzes at once (its worker processes); 0: remote "
        "workers only."
    )
    workers_from: str | None = Field(
        description='How `workers` was decided: "auto: 1 of 2 CPUs, shared with clap" (its '
        'share of the CPUs this host may use), "set: workers = 3".'
    )
    queued_because: list[QueueReason] = Field(
        description="Why the waiting jobs were queued, the largest group first."
    )
    outdated_workers: list[OutdatedWorker] = Field(
        description="Workers seen in the last minutes on another model version than this "
        "host's: they take none of its jobs."
    )


class LibraryTotals(BaseModel):
    tracks: int
    missing: int
    distinct_contents: int


class Excluded(BaseModel):
    """Tracks the `[vibe_api] exclude_*` rules left out."""

    tracks: int = Field(description="How many (a track excluded by two rules counts once).")
    rules: dict[str, int] = Field(
        description="How many each rule excluded, by its setting's name (e.g. exclude_paths); "
        "only rules that excluded some."
    )


class LibraryExcluded(Excluded):
    settings: dict[str, Any] = Field(
        description="The exclude_* settings in force, by name; empty when none is set."
    )


class StatusAnswer(BaseModel):
    analyzers: list[AnalyzerStatus]
    library: LibraryTotals
    excluded: LibraryExcluded = Field(
        description="The exclude rules in force and the present tracks they leave out."
    )
    time: float
