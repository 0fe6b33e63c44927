"""What the vibe API accepts and answers, as pydantic models: the handlers validate requests
with them and the OpenAPI document is built from them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from soundspan_hooks.openapi import component_schemas, operation, ref

MAX_LIMIT = 200


class TrackQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str | None = Field(None, max_length=1000)
    q: str | None = Field(None, max_length=500)
    limit: int = Field(50, ge=1, le=MAX_LIMIT)
    offset: int = Field(0, ge=0, le=10_000_000)


class SimilarQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(20, ge=1, le=MAX_LIMIT)
    analyzer: str | None = Field(None, max_length=100)


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=500)
    limit: int = Field(20, ge=1, le=MAX_LIMIT)

    @field_validator("limit", "text", mode="before")
    @classmethod
    def exact_json_types(cls, value: Any) -> Any:
        """JSON true is not the number 1, and 5 is not the text "5"."""
        if isinstance(value, bool):
            raise ValueError("must not be a boolean")
        return value


class Track(BaseModel):
    id: str
    path: str
    title: str | None
    artist: str | None
    album: str | None
    duration: float | None


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


class Scored(BaseModel):
    track: Track
    score: float = Field(description="Cosine similarity, or the mean probability of tags.")


class SimilarAnswer(BaseModel):
    track: Track
    analyzer: str
    results: list[Scored]


class SearchAnswer(BaseModel):
    analyzer: str
    matched_tags: list[str] | None = Field(None, description="Only for a tag search.")
    results: list[Scored]


class Counts(BaseModel):
    done: int
    pending: int
    running: int
    failed: int


class AnalyzerStatus(BaseModel):
    name: str
    model_id: str
    trained: bool
    device: str
    state: Literal["ready", "loading", "unavailable"]
    reason: str | None
    version: str
    dimension: int
    counts: Counts
    tracks_per_minute: float
    eta_seconds: int | None


class LibraryTotals(BaseModel):
    tracks: int
    missing: int
    distinct_contents: int


class StatusAnswer(BaseModel):
    analyzers: list[AnalyzerStatus]
    library: LibraryTotals
    time: float


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
            "/api/vibe/search": {
                "post": operation(
                    "Text-to-vibe search",
                    {200: ref(SearchAnswer), 503: error_codes[409]},
                    body=SearchRequest,
                )
            },
            "/api/vibe/status": {
                "get": operation("Analyzers and their progress", {200: ref(StatusAnswer)})
            },
        },
        "schemas": component_schemas(
            TrackList, TrackDetail, SimilarAnswer, SearchAnswer, StatusAnswer, SearchRequest
        ),
    }
