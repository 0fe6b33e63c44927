"""Which of a music server's tracks is which of ours, by path, for the plugins that match a
server by its paths (jellyfin, lyrion). A server reports absolute paths as its machine or
container sees them; ours are relative to the music dir: a prefix mapping, given in the
settings or learnt from the paths themselves, joins the two. Pure: no I/O."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


def slashed(path: str) -> str:
    return path.replace("\\", "/")


def readable(path: str) -> str:
    """A path as stored and shown: the bytes os.fsdecode kept as surrogates (a file name that
    is not UTF-8) shown as U+FFFD, as the library's `path` shows them."""
    try:
        return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return path.encode("utf-8", "replace").decode("utf-8")


@dataclass(frozen=True)
class PathMapping:
    """An item at `server_prefix`/X on the server is our `library_prefix`/X (both folders;
    an empty one is the root)."""

    server_prefix: str = ""
    library_prefix: str = ""

    def ours(self, server_path: str) -> str | None:
        path = slashed(server_path)
        folder = slashed(self.server_prefix).rstrip("/")
        if folder:
            if not path.startswith(folder + "/"):
                return None
            rest = path[len(folder) + 1 :]
        else:
            rest = path.lstrip("/")
        library = slashed(self.library_prefix).strip("/")
        return f"{library}/{rest}" if library else rest


def given_mapping(server_prefix: str, library_prefix: str) -> PathMapping | None:
    """The prefixes set, or None where both are empty: learnt at each refresh."""
    if server_prefix or library_prefix:
        return PathMapping(server_prefix, library_prefix)
    return None


def learnt_mapping(server_paths: list[str], our_paths: set[str]) -> PathMapping | None:
    """The server folder under which most items' paths are paths of ours (each path votes for
    the folder above the longest tail of it that is one of ours); None where none is."""
    votes: Counter[str] = Counter()
    for server_path in server_paths:
        parts = slashed(server_path).split("/")
        for cut in range(len(parts)):
            if "/".join(parts[cut:]) in our_paths:
                votes["/".join(parts[:cut])] += 1
                break
    if not votes:
        return None
    return PathMapping(votes.most_common(1)[0][0], "")


@dataclass(frozen=True)
class ServerItem:
    """One of the server's tracks, with what matching and the id hooks read."""

    id: str  # the server's own id, the one its clients ask by
    path: str | None  # None: the server gives no file path for it (a stream, say)
    artist_id: str | None  # the server's id of its (first) artist
    artist_name: str | None


@dataclass(frozen=True)
class Matching:
    """The matches of one listing, and what was left unmatched and why."""

    items: int  # items listed
    rows: list[dict[str, str | None]]  # item_id, track_id, artist_id, artist_name, path
    mapping: PathMapping | None  # None: none given and none could be learnt
    learnt: bool
    without_path: int  # items the server gives no path for
    outside_mapping: int  # items whose path is not under server_prefix
    not_in_library: int  # items whose mapped path is no track of ours
    example_unmatched: str | None  # one such item's path, to set the mapping by
    unmatched_items: frozenset[str]  # the ids of the items with a path and no track


def match_items(
    items: list[ServerItem], tracks_by_path: dict[str, str], given: PathMapping | None
) -> Matching:
    """Each item whose path maps onto one of our tracks' paths, with that track's id;
    `given` None: the mapping is learnt from the paths."""
    mapping = given or learnt_mapping([i.path for i in items if i.path], set(tracks_by_path))
    rows: list[dict[str, str | None]] = []
    without_path = outside = missing = 0
    example = None
    unmatched: set[str] = set()
    for item in items:
        if item.path is None:
            without_path += 1
            continue
        ours = mapping.ours(item.path) if mapping else None
        track_id = tracks_by_path.get(ours) if ours is not None else None
        if track_id is None:
            if ours is None:
                outside += 1
            else:
                missing += 1
            example = example or readable(item.path)
            unmatched.add(item.id)
            continue
        rows.append(
            {
                "item_id": item.id,
                "track_id": track_id,
                "artist_id": item.artist_id,
                "artist_name": item.artist_name,
                "path": readable(item.path),
            }
        )
    return Matching(
        len(items), rows, mapping, given is None, without_path, outside, missing, example,
        frozenset(unmatched),
    )  # fmt: skip
