"""What the AudioMuse-AI API that music servers' plugins call accepts and answers, as pydantic
models: the handlers validate with them and the OpenAPI document is built from them.

Field names are that API's (`item_id`, `author`, `n`), not ours: the released plugins read
exactly these. Ids are the music server's.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from soundspan_hooks.openapi import component_schemas, json_content, operation, ref

MAX_RESULTS = 200  # a larger `n` is answered with this many, not refused
MAX_PATH_STEPS = 100
MAX_ALCHEMY_ITEMS = 20
ServerId = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00]+$")]
Words = Annotated[str, Field(min_length=1, max_length=500, pattern=r"^[^\x00]+$")]


class Query(BaseModel):
    # unknown parameters are let through: the plugins send ones we have no use for
    model_config = ConfigDict(extra="ignore")
    server: ServerId | None = Field(
        None, description="Which music server the ids are of (its plugin's name, e.g. subsonic)."
    )


class SimilarTracksQuery(Query):
    item_id: ServerId | None = Field(None, description="The seed: a song id of the server.")
    title: Words | None = Field(None, description="Or the seed by title, with artist.")
    artist: Words | None = None
    n: int = Field(10, ge=1, le=10_000, description=f"Tracks wanted; at most {MAX_RESULTS}.")
    eliminate_duplicates: bool = Field(
        True,
        description="Versions of one recording once, and a cap per artist and per album.",
    )
    radius_similarity: bool = Field(False, description="Accepted; ignored.")
    mood_similarity: bool = Field(False, description="Accepted; ignored.")

    @model_validator(mode="after")
    def _one_seed(self) -> SimilarTracksQuery:
        if self.item_id is None and (self.title is None or self.artist is None):
            raise ValueError("give item_id, or both title and artist")
        return self


class FindPathQuery(Query):
    start_song_id: ServerId
    end_song_id: ServerId
    max_steps: int = Field(
        25, ge=1, le=10_000, description=f"Songs in the path, both ends included; at most "
        f"{MAX_PATH_STEPS}."
    )  # fmt: skip
    count: int | None = Field(None, ge=1, le=10_000, description="Accepted; max_steps counts.")
    path_fix_size: bool = Field(False, description="Accepted; ignored.")
    mood_pct: int | None = Field(None, ge=0, le=100, description="Accepted; ignored.")


class SimilarArtistsQuery(Query):
    artist: Words | None = Field(None, description="The server's artist id, or a name.")
    artist_id: ServerId | None = Field(None, description="The server's artist id.")
    n: int = Field(10, ge=1, le=100)
    include_component_matches: bool = False
    ef_search: int | None = Field(None, ge=1, le=10_000, description="Accepted; ignored.")

    @model_validator(mode="after")
    def _one_artist(self) -> SimilarArtistsQuery:
        if self.artist is None and self.artist_id is None:
            raise ValueError("give artist or artist_id")
        return self


class SearchTracksQuery(Query):
    search_query: Words | None = Field(None, description="Words of a title, artist or album.")
    title: Words | None = None
    artist: Words | None = None
    start: int = Field(0, ge=0, le=10_000)
    end: int | None = Field(None, ge=1, le=10_500)


class AlchemyItem(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: ServerId
    op: Literal["ADD", "SUBTRACT", "add", "subtract"]
    type: Literal["song", "artist"] = "song"


class AlchemyRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    items: list[AlchemyItem] = Field(min_length=1, max_length=MAX_ALCHEMY_ITEMS)
    n: int = Field(25, ge=1, le=10_000, description=f"Tracks wanted; at most {MAX_RESULTS}.")
    server: ServerId | None = None

    @model_validator(mode="after")
    def _something_added(self) -> AlchemyRequest:
        if not any(item.op.upper() == "ADD" for item in self.items):
            raise ValueError("add at least one item (op ADD)")
        return self


class SongAnswer(BaseModel):
    item_id: str = Field(description="The server's song id.")
    title: str
    author: str = Field(description="The artist; empty when untagged.")
    album: str = Field(description="Empty when untagged.")
    distance: float = Field(
        description="Cosine distance to the seed (0 the same, 1 unrelated, 2 opposite): "
        "1 - distance is our similarity score."
    )


class PathAnswer(BaseModel):
    path: list[SongAnswer] = Field(description="From start to end, both included.")
    total_distance: float = Field(description="The sum of the steps' distances.")


class RepresentativeSong(BaseModel):
    item_id: str
    title: str


class ComponentMatch(BaseModel):
    artist1_representative_songs: list[RepresentativeSong] = Field(
        description="The asked artist's songs nearest to the other's."
    )
    artist2_representative_songs: list[RepresentativeSong] = Field(
        description="The similar artist's songs nearest to the asked one's."
    )


class ArtistAnswer(BaseModel):
    artist: str
    artist_id: str | None = Field(description="The server's artist id.")
    divergence: float = Field(description="Mean cosine distance of its songs to the artist's.")
    component_matches: list[ComponentMatch] = Field(
        None,
        description="Only with include_component_matches=true.",
        json_schema_extra=lambda schema: schema.pop("default"),
    )


class FoundSong(BaseModel):
    item_id: str
    title: str
    author: str
    album: str
    album_artist: str


class AlchemyAnswer(BaseModel):
    results: list[SongAnswer]
    filtered_out: list[SongAnswer] = Field(description="Always empty here.")


class ConfigAnswer(BaseModel):
    model_config = ConfigDict(extra="allow")
    server_kind: Literal["soundspan"]
    version: str
    max_songs_per_artist: int
    alchemy_default_n_results: int
    alchemy_max_n_results: int
    path_distance_metric: Literal["angular"]


class ErrorAnswer(BaseModel):
    error: str = Field(description="What went wrong, for people.")


def openapi_fragment() -> dict[str, Any]:
    def answering(summary: str, answer: dict[str, Any], query=None, body=None) -> dict[str, Any]:
        described = operation(summary, {200: answer}, query, body)
        # this API's errors are {"error": "..."}, as the plugins read them
        for status in ("400", "404", "409", "503"):
            described["responses"][status] = {
                "description": status,
                "content": json_content(ref(ErrorAnswer)),
            }
        return described

    def listing(model: type[BaseModel]) -> dict[str, Any]:
        return {"type": "array", "items": ref(model)}

    return {
        "paths": {
            "/api/similar_tracks": {
                "get": answering(
                    "Songs of the server that sound like one of its songs (AudioMuse-AI API)",
                    listing(SongAnswer),
                    SimilarTracksQuery,
                )
            },
            "/api/find_path": {
                "get": answering(
                    "Songs stepping from one song to another", ref(PathAnswer), FindPathQuery
                )
            },
            "/api/similar_artists": {
                "get": answering(
                    "Artists whose songs sound like an artist's",
                    listing(ArtistAnswer),
                    SimilarArtistsQuery,
                )
            },
            "/api/alchemy": {
                "post": answering(
                    "Songs near some songs and artists, away from others",
                    ref(AlchemyAnswer),
                    body=AlchemyRequest,
                )
            },
            "/api/search_tracks": {
                "get": answering(
                    "The server's songs by title, artist or album words",
                    listing(FoundSong),
                    SearchTracksQuery,
                )
            },
            "/api/config": {"get": answering("What this API answers with", ref(ConfigAnswer))},
            "/api/active_tasks": {
                "get": answering(
                    "No analysis task runs on request here: always {}",
                    {"type": "object", "maxProperties": 0},
                )
            },
        },
        "schemas": component_schemas(
            SongAnswer,
            PathAnswer,
            ArtistAnswer,
            FoundSong,
            AlchemyAnswer,
            ConfigAnswer,
            ErrorAnswer,
        ),  # fmt: skip
    }
