"""What a person reads in a terminal, and what a script reads from a pipe: checks on text the
CLI (or a log) prints."""

from __future__ import annotations

from collections.abc import Iterable

BOX_DRAWING = {chr(code) for code in range(0x2500, 0x2580)}


def assert_words_whole(screen: str, texts: Iterable[str], width: int) -> None:
    """Every word of `texts` stands whole on some line of `screen`, no line wider than the
    terminal: a word broken inside itself ("anal / yzer") is missing from every line."""
    lines = screen.splitlines()
    assert max(len(line) for line in lines) <= width, screen
    tokens = {token for line in lines for token in line.split()}
    broken = [word for text in texts for word in text.split() if word not in tokens]
    assert not broken, f"{broken} are not whole at {width} columns:\n{screen}"


def assert_plain(output: str) -> None:
    """No colour codes and no box lines, for grep and cut."""
    assert "\x1b" not in output and not BOX_DRAWING & set(output), output
