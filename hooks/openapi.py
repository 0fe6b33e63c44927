"""Describing a plugin's routes for the OpenAPI document (soundspan_openapi hook), and
validating requests with the same pydantic models, so the document cannot drift from what
the handlers accept.
"""

from __future__ import annotations

import json
import math
from http import HTTPStatus
from typing import Annotated, Any, NoReturn

from aiohttp import web
from pydantic import BaseModel, Field, ValidationError, create_model

from soundspan_hooks.types import TRACK_TAG_TYPES, TRACK_TAGS

ERROR = {"$ref": "#/components/schemas/Error"}


# ids are opaque to clients, but never hold a NUL (PostgreSQL text cannot)
TrackId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00]+$")]


SHOWN_TAGS = ("title", "artist", "album", "duration")
"""The tags every answer shows; the richer ones, the rest of TRACK_TAGS, are in the answers
that read them (the vibe API's) and absent elsewhere."""
RICHER_TAGS = tuple(tag for tag in TRACK_TAGS if tag not in SHOWN_TAGS)


class _TrackFile(BaseModel):
    id: str
    path: str


# built from TRACK_TAGS, so that a new tag reaches every answer and the document by itself
Track = create_model(
    "Track",
    __base__=_TrackFile,
    __doc__="A track as every answer shows it, the host's and the plugins' alike.",
    **{
        tag: (TRACK_TAG_TYPES[tag] | None, ... if tag in SHOWN_TAGS else None) for tag in TRACK_TAGS
    },
)


def track_json(row: Any) -> dict[str, Any]:
    """A `tracks` row (any object with Track's required fields) as clients see it, with
    the richer tags the row carries."""
    shown = {name: getattr(row, name) for name in Track.model_fields if name not in RICHER_TAGS}
    shown.update({name: getattr(row, name) for name in RICHER_TAGS if hasattr(row, name)})
    return shown


REF_TEMPLATE = "#/components/schemas/{model}"


def ref(model: type[BaseModel]) -> dict[str, str]:
    """A reference to a model's schema in the document's components."""
    return {"$ref": REF_TEMPLATE.format(model=model.__name__)}


def component_schemas(*models: type[BaseModel]) -> dict[str, Any]:
    """The components/schemas entries for these models and every model they nest."""
    schemas: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template=REF_TEMPLATE)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def operation(
    summary: str,
    responses: dict[int, dict[str, Any]],
    query: type[BaseModel] | None = None,
    body: type[BaseModel] | None = None,
    path_parameters: tuple[str, ...] = (),
) -> dict[str, Any]:
    """One operation: its parameters and body from pydantic models, its JSON responses."""
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in path_parameters
    ]
    if query is not None:
        schema = query.model_json_schema()
        for name, field_schema in schema["properties"].items():
            parameters.append(
                {
                    "name": name,
                    "in": "query",
                    "required": name in schema.get("required", []),
                    "schema": {key: value for key, value in field_schema.items() if key != "title"},
                }
            )
    described: dict[str, Any] = {
        str(status): {"description": _reason(status), "content": json_content(schema)}
        for status, schema in responses.items()
    }
    for status in (400, 401, 404, 413):
        described.setdefault(
            str(status), {"description": _reason(status), "content": json_content(ERROR)}
        )
    if body is not None:  # a body not sent as application/json
        described.setdefault("415", {"description": _reason(415), "content": json_content(ERROR)})
    result: dict[str, Any] = {"summary": summary, "responses": described}
    if parameters:
        result["parameters"] = parameters
    if body is not None:
        # nested models are referenced in the components: list the body model there too
        schema = body.model_json_schema(ref_template=REF_TEMPLATE)
        schema.pop("$defs", None)
        result["requestBody"] = {"required": True, "content": json_content(schema)}
    return result


def _reason(status: int) -> str:
    return HTTPStatus(status).phrase


def parse(model: type[BaseModel], values: Any) -> Any:
    """Validate a query or body; a bad one is a 400 with every problem named.

    pydantic takes "inf" and "nan" for a float: no such value is a count, a time or a weight,
    and one stored would stop whatever reads it back, so it is refused here for every model.
    """
    try:
        parsed = model.model_validate(values)
    except ValidationError as error:
        problems = [
            f"{'.'.join(str(part) for part in problem['loc']) or 'body'}: {problem['msg']}"
            for problem in error.errors()
        ]
        # names of unknown parameters are the client's text: keep them to one header-safe line
        message = "; ".join(problems).replace("\r", " ").replace("\n", " ")
        raise web.HTTPBadRequest(reason=message) from None
    if where := _non_finite(parsed.model_dump()):
        raise web.HTTPBadRequest(reason=f"{where}: must be a finite number")
    return parsed


async def json_body(request: web.Request) -> Any:
    """The request's JSON, strictly: NaN and Infinity (which Python's json reads, and JSON
    has not) and nesting deeper than the interpreter's stack are 400s, not stored or a 500."""
    try:
        return json.loads(await request.text(), parse_constant=_refuse_constant)
    except RecursionError:
        raise web.HTTPBadRequest(reason="the body is nested too deeply") from None
    except ValueError:
        raise web.HTTPBadRequest(reason="the body is not valid JSON") from None


def _refuse_constant(name: str) -> NoReturn:
    raise web.HTTPBadRequest(reason=f"the body is not valid JSON: {name} is not a JSON number")


def _non_finite(value: Any, where: str = "body") -> str | None:
    """Where in a parsed request a float is NaN or infinite, if anywhere."""
    if isinstance(value, float):
        return None if math.isfinite(value) else where
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        if found := _non_finite(item, str(key) if where == "body" else f"{where}.{key}"):
            return found
    return None
