"""The `[vibe_api]` section: where playlists go, how the map is drawn, and the rules every
list obeys (exclude_*)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from soundspan_hooks import HostContext, PluginSettings
from soundspan_plugins.vibe_api.exclusions import Exclusions, glob_regex
from soundspan_plugins.vibe_api.vibe_map import umap_installed

NAME = "vibe_api"


class VibeApiSettings(PluginSettings):
    playlists_dir: Path = Field(
        Path("Playlists"),
        description="Where POST /api/playlists writes .m3u files, relative to the music dir "
        "(Navidrome and Jellyfin import playlists they find there); ingest leaves it alone.",
    )
    map_projection: Literal["auto", "pca", "umap"] = Field(
        "auto",
        description="How /api/vibe/map flattens embeddings: auto is UMAP when umap-learn is "
        "installed, else PCA.",
    )
    map_refresh_seconds: float = Field(
        60.0, gt=0, description="How often a map that was asked for is checked for new tracks."
    )
    exclude_paths: list[str] = Field(
        [],
        description="Tracks left out of every list (similar, search, path, mix, map, playlists, "
        "Instant Mix): globs on the path relative to the music dir, case-sensitive, e.g. "
        "`Audiobooks/**`; `*` and `?` stay within a folder, `**/` is any folders, `[abc]` a "
        "class, `\\[` a bracket itself.",
    )
    exclude_genres: list[str] = Field(
        [],
        description='Tracks left out of every list by their genre tag, e.g. ["Audiobook", '
        '"Podcast"]: case aside, and any of several in one tag ("Audiobook; Fiction").',
    )
    exclude_shorter_than_seconds: float | None = Field(
        None,
        gt=0,
        description="Tracks shorter than this left out of every list; a track of unknown "
        "length is kept.",
    )
    exclude_longer_than_seconds: float | None = Field(
        None,
        gt=0,
        description="Tracks longer than this left out of every list (a long mix, an audiobook "
        "in one file); a track of unknown length is kept.",
    )

    @field_validator("map_projection")
    @classmethod
    def umap_needs_umap_learn(cls, projection: str) -> str:
        if projection == "umap" and not umap_installed():
            raise ValueError("umap needs the umap-learn package installed (pip install umap-learn)")
        return projection

    @field_validator("exclude_paths")
    @classmethod
    def globs_are_patterns(cls, globs: list[str]) -> list[str]:
        for glob in globs:
            if not glob or "\x00" in glob:
                raise ValueError("a glob must be a non-empty path pattern, e.g. 'Audiobooks/**'")
            try:
                re.compile(glob_regex(glob))
            except re.error as error:
                raise ValueError(f"the glob {glob!r} is not a pattern: {error}") from None
        return globs

    @field_validator("exclude_genres")
    @classmethod
    def genres_are_named(cls, genres: list[str]) -> list[str]:
        if any(not genre.strip() for genre in genres):
            raise ValueError("a genre must not be empty")
        return [genre.strip() for genre in genres]

    @property
    def exclusions(self) -> Exclusions:
        """The exclude_* rules, as the queries apply them."""
        return Exclusions(
            tuple(self.exclude_paths),
            tuple(self.exclude_genres),
            self.exclude_shorter_than_seconds,
            self.exclude_longer_than_seconds,
        )


def settings_of(host: HostContext) -> VibeApiSettings:
    return host.section(NAME)


def exclusions_of(host: HostContext) -> Exclusions:
    """The rules every list of this host obeys."""
    return settings_of(host).exclusions
