"""Database rows as named tuples, for lists whose fields are read one by one.

SQLAlchemy 2.1's Row reaches a field by name through `__getattr__`, once the normal attribute
lookup has failed: about 2.5 µs a read on this project's 2-core VM, against a few tens of ns
for a named tuple's field or a Row's own unpacking. An Instant Mix of 200 reads some 4,000
fields of its candidates (ranking, shaping, answering), so rows read field by field are made
named tuples once, as they are fetched; rows read whole are unpacked instead
(`for track_id, song_id in rows`). bench/RESULTS.md, "Rows read by name" (issue 25).
"""

from __future__ import annotations

import functools
from collections import namedtuple
from typing import Any

from sqlalchemy.engine import Result


@functools.lru_cache(maxsize=64)
def _row_type(fields: tuple[str, ...]) -> type[tuple]:
    return namedtuple("Record", fields)


def named_rows(result: Result[Any]) -> list[Any]:
    """The result's rows as named tuples of its columns (read by name, index or unpacking)."""
    make = _row_type(tuple(result.keys()))._make
    return [make(row) for row in result]
