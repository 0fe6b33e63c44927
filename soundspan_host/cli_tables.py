"""`soundspan-host status`: the host's analysis status laid out with the shared tables
(soundspan_hooks.cli_tables), which plugins' commands print with as well."""

from __future__ import annotations

from typing import Any

from rich.console import Console, RenderableType
from rich.padding import Padding

from soundspan_hooks.cli_tables import (
    Column,
    download_note,
    duration_text,
    eta_text,
    fitted_table,
    note,
    rate_text,
)

STATUS_COLUMNS = (
    Column("analyzer"),
    Column("state"),
    Column("done", justify="right"),
    Column("waiting", justify="right", drop=1),
    Column("failed", justify="right", drop=4),
    Column("tracks/min", justify="right", drop=2),
    Column("audio min/min", justify="right", drop=3),
    Column("ETA", justify="right"),
)


def status_view(console: Console, answer: dict[str, Any]) -> list[RenderableType]:
    """`soundspan-host status`: a row of progress per analyzer, then lines on each one's model
    (the long words: model names, reasons) and the library."""
    rows, notes = [], []
    for analyzer in answer["analyzers"]:
        counts = analyzer["counts"]
        waiting = counts["pending"] + counts["running"]
        measuring = waiting > 0 and analyzer["state"] == "ready"
        rows.append(
            (
                analyzer["name"],
                analyzer["state"],
                f"{counts['done']}/{sum(counts.values())}",
                str(waiting),
                str(counts["failed"]),
                rate_text(analyzer["tracks_per_minute"], measuring),
                rate_text(analyzer["audio_minutes_per_minute"], measuring),
                eta_text(analyzer["eta_seconds"], waiting, measuring),
            )
        )
        notes.extend(analyzer_notes(analyzer, waiting, answer["time"]))
    library = answer["library"]
    notes.append(
        note(
            f"library: {library['tracks']} tracks ({library['distinct_contents']} distinct),"
            f" {library['missing']} missing"
        )
    )
    table = fitted_table(console, "soundspan analyzers", STATUS_COLUMNS, rows)
    return [table, *notes]


def analyzer_notes(analyzer: dict[str, Any], waiting: int, now: float) -> list[Padding]:
    """The model an analyzer runs, and why it waits or is behind, in a few lines; `now` is
    the host's clock, which its workers' last_seen comes from."""
    name, model, state = analyzer["name"], analyzer["model_id"], analyzer["state"]
    if state == "unavailable":
        head = f"{name}: no model loaded ({model})"
    elif state == "downloading":
        head = f"{name}: {model}, {download_note(analyzer['download']) or 'downloading'}"
    else:
        weights = "trained" if analyzer["trained"] else "untrained"
        head = f"{name}: {model}, {weights} weights, {state} on {analyzer['device']}"
    if waiting:
        head += f"; {analyzer['audio_minutes_waiting']:.0f} min of audio waiting"
    notes = [note(head)]
    notes += [note(text, 2) for text in (analyzer["reason"], analyzer.get("detail")) if text]
    if explained := analyzer.get("workers_from"):
        notes.append(note(f"workers: {analyzer['workers']} ({explained})", 2))
    if queued := analyzer.get("queued_because"):
        reasons = "; ".join(f"{item['reason']} ({item['jobs']} jobs)" for item in queued)
        notes.append(note(f"queued because: {reasons}", 2))
    for worker in analyzer.get("outdated_workers") or ():
        seen = duration_text(max(0.0, now - worker["last_seen"]))
        notes.append(
            note(
                f"worker {worker['worker']} runs {name} {worker['version']}, this host"
                f" {analyzer['version']} (seen {seen} ago)",
                2,
            )
        )
    return notes
