"""One rule for every playlist name: an M3U file's, and a music server's playlist sent once or
kept fresh. The same name may go either way, so it must suit both, and it is said in words."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

MAX_NAME_LENGTH = 60
NOT_IN_A_NAME = re.compile(r"[/\\\x00-\x1f\x7f]")
# the rule as a JSON Schema pattern, for the OpenAPI document (the check is in words below)
NAME_PATTERN = r"^[^/\\\x00-\x1f\x7f.\s]([^/\\\x00-\x1f\x7f]*[^/\\\x00-\x1f\x7f\s])?$"
NAME_RULE = (
    f"1 to {MAX_NAME_LENGTH} characters, without slashes, backslashes or control characters,"
    " not starting with a dot, and no space at either end"
)


def checked_playlist_name(name: str) -> str:
    """`name` if it follows the rule; else a ValueError that states the rule."""
    if (
        not name
        or len(name) > MAX_NAME_LENGTH
        or NOT_IN_A_NAME.search(name)
        or name.startswith(".")
        or name != name.strip()
    ):
        raise ValueError(f"playlist name {name[:120]!r} refused: use {NAME_RULE}")
    return name


PlaylistName = Annotated[
    str,
    AfterValidator(checked_playlist_name),
    Field(
        description=f"A playlist name: {NAME_RULE}.",
        json_schema_extra={"minLength": 1, "maxLength": MAX_NAME_LENGTH, "pattern": NAME_PATTERN},
    ),
]
