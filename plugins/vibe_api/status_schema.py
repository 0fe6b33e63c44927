"""What the vibe API adds to the host's analysis status (GET /api/analysis/status): the
exclude rules in force and the tracks they leave out; and the same counts for one list."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Excluded(BaseModel):
    """Tracks the `[vibe_api] exclude_*` rules left out."""

    tracks: int = Field(description="How many (a track excluded by two rules counts once).")
    rules: dict[str, int] = Field(
        description="How many each rule excluded, by its setting's name (e.g. exclude_paths); "
        "only rules that excluded some."
    )


class LibraryExcluded(Excluded):
    """The `excluded` field of GET /api/analysis/status: the exclude rules in force and the
    present tracks they leave out."""

    settings: dict[str, Any] = Field(
        description="The exclude_* settings in force, by name; empty when none is set."
    )
