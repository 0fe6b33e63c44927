"""How `soundspan-host` commands lay out the API's answers, the host's and the plugins' alike:
tables that fit the terminal, plain lines for pipes.

In a terminal every table keeps its words whole: all columns but one stay on one line each, the
one long column (a path, a reason) wraps between words, and when the terminal is too narrow the
least useful columns leave. In a pipe or a file each row is one plain line, for grep and cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len
from rich.console import Console, JustifyMethod
from rich.measure import Measurement
from rich.padding import Padding
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Column as RichColumn
from rich.table import Table
from rich.text import Text

PLAIN_WIDTH = 10_000  # wider than any row or note, so nothing in a pipe's output wraps
WRAP_FLOOR = 24  # the long column's narrowest: shorter words stay whole, longer paths fold


def make_console(stderr: bool = False) -> Console:
    """Rich at the terminal's width (COLUMNS wins); elsewhere plain text that never wraps."""
    console = Console(stderr=stderr)
    return console if console.is_terminal else Console(stderr=stderr, width=PLAIN_WIDTH)


@dataclass(frozen=True)
class Column:
    """A table column. `wraps`: the table's one long column, whose lines break between words.
    `drop`: 0 keeps the column at any width; otherwise, in a terminal too narrow for the
    table, columns leave in rising `drop` order. `under`: in a terminal, this column's text
    goes on a line of its own under that (long) column's text, in the same cell."""

    header: str
    justify: JustifyMethod = "left"
    wraps: bool = False
    drop: int = 0
    under: str | None = None


Cell = str | Text  # a str is shown as is: file names hold [brackets] that rich markup would eat


def fitted_table(
    console: Console, title: str, columns: Sequence[Column], rows: Sequence[Sequence[Cell]]
) -> Table:
    """`rows` (one cell per column) as a table laid out for `console`."""
    # a table narrower than its title folds the title into its width, a word in pieces
    title_width = min(cell_len(title), console.width)
    if not console.is_terminal:
        return _table(title, columns, columns, rows, terminal=False, min_width=title_width)
    columns, rows = _stacked(columns, rows)
    shown = list(columns)
    wide = console.options.update_width(PLAIN_WIDTH)
    while True:
        # the narrowest the table may be: its long column at its floor, its others whole
        probe = _table(title, columns, shown, rows, terminal=True, long_column_empty=True)
        droppable = [column for column in shown if column.drop]
        if Measurement.get(console, wide, probe).minimum <= console.width or not droppable:
            return _table(title, columns, shown, rows, terminal=True, min_width=title_width)
        shown.remove(min(droppable, key=lambda column: column.drop))


def _table(
    title: str,
    columns: Sequence[Column],
    shown: Sequence[Column],
    rows: Sequence[Sequence[Cell]],
    terminal: bool,
    long_column_empty: bool = False,
    min_width: int | None = None,
) -> Table:
    table = Table(
        title=Text(title),
        min_width=min_width,
        title_justify="left",
        title_style="bold" if terminal else "",
        header_style="bold underline" if terminal else "",
        box=None,
        pad_edge=False,
    )
    indexes = [columns.index(column) for column in shown]
    for column, index in zip(shown, indexes, strict=True):
        texts = [column.header, *(_plain(row[index]) for row in rows)]
        natural = max(cell_len(line) for text in texts for line in text.splitlines() or [""])
        if terminal and column.wraps:
            table.add_column(
                column.header,
                justify=column.justify,
                overflow="fold",
                min_width=min(natural, WRAP_FLOOR),
            )
        else:
            table.add_column(column.header, justify=column.justify, no_wrap=True, min_width=natural)
    for row in rows:
        table.add_row(
            *(
                Text() if long_column_empty and column.wraps else _text(row[index])
                for column, index in zip(shown, indexes, strict=True)
            )
        )
    return table


def _stacked(
    columns: Sequence[Column], rows: Sequence[Sequence[Cell]]
) -> tuple[list[Column], list[list[Cell]]]:
    """The columns that go `under` another, moved into its cells."""
    kept = [column for column in columns if not column.under]
    stacked_rows = []
    for row in rows:
        cells = {column.header: _text(cell) for column, cell in zip(columns, row, strict=True)}
        for column in columns:
            if column.under and cells[column.header].plain:
                cells[column.under] = Text("\n").join((cells[column.under], cells[column.header]))
        stacked_rows.append([cells[column.header] for column in kept])
    return kept, stacked_rows


def _plain(cell: Cell) -> str:
    return cell.plain if isinstance(cell, Text) else cell


def _text(cell: Cell) -> Text:
    return cell if isinstance(cell, Text) else Text(cell)


def note(text: str, indent: int = 0) -> Padding:
    """A line under a table; when the terminal wraps it, its lines keep its indent."""
    return Padding(Text(text), (0, 0, 0, indent), expand=False)


def progress_bars(console: Console) -> Progress:
    """`scan --wait`'s bars. In a terminal the bar takes what the words leave and only the last
    column (rates, ETA, a note) may wrap, between its words; in a pipe the last state is
    printed once, one line per analyzer."""
    if not console.is_terminal:  # done/total says it in words: no bar of box characters
        return Progress(
            TextColumn("{task.description}"),
            MofNCompleteColumn(),
            TextColumn("{task.fields[details]}", markup=False),
            console=console,
        )
    return Progress(
        TextColumn("{task.description}"),
        # the bar and the words share what the other columns leave, 1 to 2
        BarColumn(bar_width=None, table_column=RichColumn(ratio=1)),
        MofNCompleteColumn(table_column=RichColumn(no_wrap=True)),
        TextColumn("{task.fields[details]}", markup=False, table_column=RichColumn(ratio=2)),
        console=console,
        expand=True,
    )


def progress_fields(analyzer: dict[str, Any], wide: bool) -> dict[str, str]:
    """The words beside a bar: rates, ETA and a note (failures, a model on its way); a `wide`
    terminal also has room for the audio rate."""
    counts = analyzer["counts"]
    waiting = counts["pending"] + counts["running"]
    measuring = waiting > 0 and analyzer["state"] == "ready"
    details = f"{rate_text(analyzer['tracks_per_minute'], measuring)} tracks/min"
    if wide:
        details += f", {rate_text(analyzer['audio_minutes_per_minute'], measuring)} audio min/min"
    details += f"  ETA {eta_text(analyzer['eta_seconds'], waiting, measuring)}"
    failed = f"{counts['failed']} failed" if counts["failed"] else ""
    note = download_note(analyzer.get("download")) or (
        analyzer["state"] if analyzer["state"] != "ready" else failed
    )
    return {"details": f"{details}  {note}" if note else details}


def results_table(console: Console, title: str, results: list[dict[str, Any]]) -> Table:
    """Search and similar answers. In a terminal, a track's tags and file share one column."""
    numbers = [(str(rank), f"{result['score']:.3f}") for rank, result in enumerate(results, 1)]
    tracks = [result["track"] for result in results]
    if not console.is_terminal:
        columns = [Column(header) for header in ("#", "score", "artist", "title", "file", "id")]
        rows = [
            (*number, track["artist"] or "", track["title"] or "", track["path"], track["id"])
            for number, track in zip(numbers, tracks, strict=True)
        ]
        return fitted_table(console, title, columns, rows)
    columns = [
        Column("#", justify="right"),
        Column("score"),
        Column("track", wraps=True),
        Column("id", drop=1),
    ]
    rows = [
        (*number, track_text(track), track["id"])
        for number, track in zip(numbers, tracks, strict=True)
    ]
    return fitted_table(console, title, columns, rows)


def track_text(track: dict[str, Any]) -> Text:
    """ "Artist - Title" over the file's path, dimmed; only the path when the file has no tags."""
    tags = " - ".join(part for part in (track["artist"], track["title"]) if part)
    if not tags:
        return Text(track["path"])
    return Text.assemble(tags, "\n", (track["path"], "dim"))


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


def rate_text(per_minute: float | None, measuring: bool) -> str:
    """A rate over the current run; "measuring" until it has one, "-" when nothing runs."""
    if per_minute is None:
        return "measuring" if measuring else "-"
    return f"{per_minute:.1f}"


def eta_text(eta_seconds: int | None, waiting: int, measuring: bool) -> str:
    if eta_seconds is None and measuring:
        return "measuring"
    return duration_text(eta_seconds if waiting else None)


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02}m" if hours else f"{minutes}m{seconds:02}s"
