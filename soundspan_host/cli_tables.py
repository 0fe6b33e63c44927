"""How the CLI shows the API's answers in a terminal: tables, and the words for a state."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table


def results_table(title: str, results: list[dict[str, Any]]) -> Table:
    table = Table(title=escape(title))
    for column in ("#", "score", "artist", "title", "file", "id"):
        table.add_column(column, overflow="fold")
    for rank, result in enumerate(results, start=1):
        track = result["track"]
        add_row(
            table,
            str(rank),
            f"{result['score']:.3f}",
            track["artist"] or "",
            track["title"] or "",
            track["path"],
            track["id"],
        )
    return table


def add_row(table: Table, *cells: str) -> None:
    """A row of text from the API, shown as is: file names hold [brackets] rich would eat."""
    table.add_row(*(escape(cell) for cell in cells))


def weights_word(analyzer: dict[str, Any]) -> str:
    if analyzer["state"] == "unavailable":
        return "-"  # none loaded
    return "trained" if analyzer["trained"] else "untrained"


def download_note(download: dict | None) -> str:
    """ "downloading 35 % (245 of 700 MB, 12 MB/s, ETA 0m40s)" for a model on its way."""
    if not download:
        return ""
    done, total = download["bytes_done"], download["bytes_total"]
    if not total:
        return f"downloading {done / 1e6:.0f} MB"
    rate, left = download["bytes_per_second"] / 1e6, duration_text(download["eta_seconds"])
    return (
        f"downloading {100 * done // total} % ({done / 1e6:.0f} of {total / 1e6:.0f} MB, "
        f"{rate:.0f} MB/s, ETA {left})"
    )


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02}m" if hours else f"{minutes}m{seconds:02}s"
