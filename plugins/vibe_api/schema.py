"""What the vibe API accepts and answers, as pydantic models: the handlers validate requests
with them and the OpenAPI document is built from them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from soundspan_hooks.openapi import Track, TrackId, component_schemas, operation, ref
from soundspan_plugins.shared.playlist_names import PlaylistName
from soundspan_plugins.vibe_api.shaping import DEFAULT_MAX_PER_ALBUM, DEFAULT_MAX_PER_ARTIST
from soundspan_plugins.vibe_api.status_schema import Excluded, LibraryExcluded

MAX_LIMIT = 200
MAX_PATH_LENGTH = 100
MAX_MIX_ITEMS = 20
MixItemText = Annotated[str, Field(min_length=1, max_length=500)]
# an optional field left out is None; null is not a way to leave it out, so the schema says no null
NO_DEFAULT: dict[str, Any] = {"json_schema_extra": lambda schema: schema.pop("default")}
# a music server's keys for a track; PostgreSQL text holds no NUL
LibraryPath = Annotated[str, Field(min_length=1, max_length=1000, pattern=r"^[^\x00]+$")]
RecordingId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00]+$")]
# only where the exclude rules left tracks out of the list: the tracks that were nearer to the
# query (or ranked above its last result) than the list reached
LeftOut = Annotated[
    Excluded,
    Field(
        None,
        description="Only where the [vibe_api] exclude_* rules left tracks out of this list: "
        "how many of those nearer than its last result (all, for a list that came out short).",
        json_schema_extra=NO_DEFAULT["json_schema_extra"],
    ),
]


class StrictJson(BaseModel):
    """A JSON body: unknown keys are refused, and JSON true is not the number 1."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("*", mode="before")
    @classmethod
    def no_booleans_for_numbers_or_text(cls, value: Any, info) -> Any:
        field = cls.model_fields[info.field_name]
        if isinstance(value, bool) and field.annotation is not bool:
            raise ValueError("must not be a boolean")
        return value


class TrackQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str | None = Field(None, max_length=1000)
    q: str | None = Field(None, max_length=500)
    limit: int = Field(50, ge=1, le=MAX_LIMIT)
    offset: int = Field(0, ge=0, le=10_000_000)


class ListCaps(BaseModel):
    """How many tracks by one artist and from one album a list may hold; the query's own
    tracks count too. Tracks without the tag are not capped."""

    max_per_artist: int = Field(
        0, ge=0, le=MAX_LIMIT, description=f"0: the default, {DEFAULT_MAX_PER_ARTIST}."
    )
    max_per_album: int = Field(
        0, ge=0, le=MAX_LIMIT, description=f"0: the default, {DEFAULT_MAX_PER_ALBUM}."
    )


class SimilarQuery(ListCaps):
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(20, ge=1, le=MAX_LIMIT)
    analyzer: str | None = Field(None, max_length=100)


class SimilarLookup(SimilarQuery):
    """The track by exactly one of our id, its path or its MusicBrainz recording id."""

    id: TrackId = Field(None, description="Our track id.", **NO_DEFAULT)
    path: LibraryPath = Field(
        None, description="Its path relative to the music dir, exactly.", **NO_DEFAULT
    )
    mbid: RecordingId = Field(None, description="Its MusicBrainz recording id.", **NO_DEFAULT)


class SearchRequest(StrictJson, ListCaps):
    text: str = Field(min_length=1, max_length=500)
    limit: int = Field(20, ge=1, le=MAX_LIMIT)


class PathQuery(ListCaps):
    """Each end by exactly one of our id, its path or its MusicBrainz recording id."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    start: TrackId = Field(None, alias="from", description="First track's id.", **NO_DEFAULT)
    end: TrackId = Field(None, alias="to", description="Last track's id.", **NO_DEFAULT)
    start_path: LibraryPath = Field(
        None, alias="from_path", description="First track's path, exactly.", **NO_DEFAULT
    )
    end_path: LibraryPath = Field(
        None, alias="to_path", description="Last track's path, exactly.", **NO_DEFAULT
    )
    start_mbid: RecordingId = Field(
        None, alias="from_mbid", description="First track's MusicBrainz id.", **NO_DEFAULT
    )
    end_mbid: RecordingId = Field(
        None, alias="to_mbid", description="Last track's MusicBrainz id.", **NO_DEFAULT
    )
    length: int = Field(12, ge=2, le=MAX_PATH_LENGTH, description="Tracks, both ends included.")
    analyzer: str | None = Field(None, max_length=100)


class MixRequest(StrictJson, ListCaps):
    add: list[MixItemText] = Field(
        min_length=1,
        max_length=MAX_MIX_ITEMS,
        description="Track ids or texts whose vibes are added.",
    )
    subtract: list[MixItemText] = Field(
        [], max_length=MAX_MIX_ITEMS, description="Track ids or texts whose vibes are taken away."
    )
    limit: int = Field(20, ge=1, le=MAX_LIMIT)
    analyzer: str | None = Field(None, max_length=100)


class MapQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    analyzer: str | None = Field(None, max_length=100)


class SimilarSource(StrictJson, ListCaps):
    track_id: TrackId
    limit: int = Field(20, ge=1, le=MAX_LIMIT)
    analyzer: str | None = Field(None, max_length=100)


class PathSource(StrictJson):
    start: TrackId = Field(alias="from")
    end: TrackId = Field(alias="to")
    length: int = Field(12, ge=2, le=MAX_PATH_LENGTH)
    analyzer: str | None = Field(None, max_length=100)


PLAYLIST_SOURCES = ("track_ids", "path", "mix", "similar", "search")


class PlaylistRecipe(StrictJson):
    """Exactly one source of tracks: track ids, a path, a mix, similar tracks or a search."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": [source]} for source in PLAYLIST_SOURCES]}
    )
    # a source left out is None; null is not a way to leave it out, so the schema says no null
    track_ids: list[TrackId] = Field(None, min_length=1, max_length=1000, **NO_DEFAULT)
    path: PathSource = Field(None, **NO_DEFAULT)
    mix: MixRequest = Field(None, **NO_DEFAULT)
    similar: SimilarSource = Field(None, **NO_DEFAULT)
    search: SearchRequest = Field(None, **NO_DEFAULT)

    @model_validator(mode="after")
    def exactly_one_source(self) -> PlaylistRecipe:
        given = [name for name in PLAYLIST_SOURCES if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(PLAYLIST_SOURCES)}")
        return self


class SendTo(StrictJson):
    server_user: str = Field(
        min_length=1, max_length=100, description="A user of [subsonic] users."
    )


class PlaylistRequest(PlaylistRecipe):
    """A playlist from exactly one source, written as an M3U file or sent to a music server."""

    name: PlaylistName = Field(description="Its name; an M3U file is NAME.m3u.")
    overwrite: bool = Field(False, description="Replace a playlist of the same name.")
    send_to: SendTo = Field(
        None,
        description="Send it to this user's account on the music server (the subsonic plugin) "
        "instead of writing an M3U file; a later send of the same name replaces its songs.",
        **NO_DEFAULT,
    )


class TrackList(BaseModel):
    tracks: list[Track]
    total: int
    limit: int
    offset: int


class Analysis(BaseModel):
    state: Literal["pending", "running", "done", "failed"]
    version: str
    attempts: int
    error: str | None
    finished_at: str | None


class TrackDetail(BaseModel):
    track: Track
    missing: bool
    analyses: dict[str, Analysis]
    results: dict[str, dict[str, Any]] = Field(description="Each analyzer's own result.")


class Why(BaseModel):
    shared_tags: list[str] = Field(
        description="The top tags (MusiCNN's) it shares with the query: its tracks, or the "
        "tags its words name; empty when either has none."
    )


class Scored(BaseModel):
    track: Track
    score: float = Field(description="Cosine similarity, or the mean probability of tags.")
    why: Why
    versions: list[Track] = Field(
        description="Other versions of this recording (same artist and title: live, "
        "remastered, a compilation's copy) left out of the list for this one."
    )


class SimilarAnswer(BaseModel):
    track: Track
    analyzer: str
    results: list[Scored]
    excluded: LeftOut


class SearchAnswer(BaseModel):
    analyzer: str
    matched_tags: list[str] | None = Field(None, description="Only for a tag search.")
    results: list[Scored]
    excluded: LeftOut


class PathStep(BaseModel):
    track: Track
    position: float = Field(description="0 at the first track, 1 at the last.")
    distance: float = Field(description="Cosine distance from the ideal point of this step.")
    why: Why = Field(description="Shared with the ends (an end: with the other end).")


class PathAnswer(BaseModel):
    analyzer: str
    steps: list[PathStep]
    excluded: LeftOut


class MixItem(BaseModel):
    item: str
    sign: Literal[1, -1]
    kind: Literal["track", "text"]
    via: str = Field(description="What placed it: the analyzer, its text tower, or tags.")


class MixAnswer(BaseModel):
    analyzer: str
    items: list[MixItem]
    results: list[Scored]
    excluded: LeftOut


class MapPoint(BaseModel):
    id: str = Field(description="A track id (one per distinct content).")
    x: float
    y: float
    label: str | None = Field(description="E.g. the top genre tag, to colour by.")


class MapAnswer(BaseModel):
    analyzer: str
    method: Literal["pca", "umap"]
    computed_at: float
    points: list[MapPoint]


class PlaylistAnswer(BaseModel):
    name: str
    file: str = Field(description="Where it was written, relative to the music dir.")
    tracks: int
    left_out: list[str] = Field(
        None,
        description="Only when some were: tracks whose file names hold a line break, which "
        "no M3U line can.",
        **NO_DEFAULT,
    )


class SentPlaylistAnswer(BaseModel):
    name: str
    sent: dict[str, Any] = Field(
        description="The music server plugin's answer; subsonic: server_user, playlist_id, "
        "created (false: the songs of the one sent before were replaced), songs, and "
        "unmatched (tracks left out, the server has no song for them)."
    )


def openapi_fragment() -> dict[str, Any]:
    error_codes = {409: {"$ref": "#/components/schemas/Error"}}
    return {
        "paths": {
            "/api/tracks": {
                "get": operation("Find tracks by path or words", {200: ref(TrackList)}, TrackQuery)
            },
            "/api/tracks/{track_id}": {
                "get": operation(
                    "A track, each analyzer's state and results",
                    {200: ref(TrackDetail)},
                    path_parameters=("track_id",),
                )
            },
            "/api/vibe/similar/{track_id}": {
                "get": operation(
                    "Tracks nearest to a track",
                    {200: ref(SimilarAnswer), **error_codes, 503: error_codes[409]},
                    SimilarQuery,
                    path_parameters=("track_id",),
                )
            },
            "/api/vibe/similar": {
                "get": operation(
                    "Tracks nearest to a track found by our id, its path or MusicBrainz id",
                    {200: ref(SimilarAnswer), **error_codes, 503: error_codes[409]},
                    SimilarLookup,
                )
            },
            "/api/vibe/search": {
                "post": operation(
                    "Text-to-vibe search",
                    {200: ref(SearchAnswer), 503: error_codes[409]},
                    body=SearchRequest,
                )
            },
            "/api/vibe/path": {
                "get": operation(
                    "Tracks drifting evenly from one track to another",
                    {200: ref(PathAnswer), **error_codes, 503: error_codes[409]},
                    PathQuery,
                )
            },
            "/api/vibe/mix": {
                "post": operation(
                    "Tracks nearest to a sum of vibes, less others",
                    {200: ref(MixAnswer), **error_codes, 503: error_codes[409]},
                    body=MixRequest,
                )
            },
            "/api/vibe/map": {
                "get": operation(
                    "2-D coordinates of every analyzed track",
                    {200: ref(MapAnswer), 503: error_codes[409]},
                    MapQuery,
                )
            },
            "/api/playlists": {
                "post": operation(
                    "Write an M3U playlist into the music dir, or send it to a music server",
                    {
                        201: {"oneOf": [ref(PlaylistAnswer), ref(SentPlaylistAnswer)]},
                        **error_codes,
                        404: error_codes[409],
                        502: error_codes[409],
                        503: error_codes[409],
                    },
                    body=PlaylistRequest,
                )
            },
        },
        "schemas": component_schemas(
            TrackList,
            TrackDetail,
            SimilarAnswer,
            SearchAnswer,
            LibraryExcluded,  # the status's `excluded` (soundspan_status_fields)
            SearchRequest,
            PathAnswer,
            MixAnswer,
            MapAnswer,
            PlaylistAnswer,
            SentPlaylistAnswer,
            PlaylistRequest,
        ),
    }
