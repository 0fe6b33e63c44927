"""The OpenAPI document: valid 3.1, in step with the routes the host really serves, and a
schemathesis run against a real host process, on a library of analyzed tracks whose ids it is
given, finds no 5xx but a declared 503, no answer off the schema, and reaches the answers that
need a real id."""

import asyncio
import copy
import json
import os
import re
import urllib.request
from collections import Counter

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from openapi_spec_validator import validate
from pydantic import TypeAdapter
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance
from sqlalchemy.ext.asyncio import create_async_engine

from soundspan_hooks.openapi import TrackId
from soundspan_host.database import async_url
from tests.harness.library import eventually, settled, write_wav
from tests.harness.processes import start_host_process, wait_healthy

TRACKS = 6
# a track id's schema, wherever the document inlines it; WORDS are what may come with it
TRACK_ID = TypeAdapter(TrackId).json_schema()
WORDS = ("title", "description")
# rules of a request that a JSON schema cannot state: a well-formed request may break them
# (query parameters cannot say "exactly one of")
UNSTATED_RULES = (
    "from and to are the same recording",
    "the mix cancels out",
    "give exactly one of",
)
# a query's other ways to name a track than its id: its path, its MusicBrainz id
OTHER_TRACK_NAMES = re.compile(r"(^|_)(path|mbid)$")
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
NEED_REAL_IDS = [
    "GET /api/tracks/{track_id}",
    "GET /api/vibe/similar/{track_id}",
    "GET /api/vibe/similar",
    "GET /api/vibe/path",
    "POST /api/vibe/mix",
    "POST /api/playlists",
]


async def test_the_document_is_valid_and_matches_the_served_routes(fast_host):
    client = await fast_host()
    spec = await (await client.get("/api/openapi.json")).json()
    validate(spec)
    assert spec["openapi"] == "3.1.0"
    documented = {
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        for method in operations
    }
    served = {
        (route.method, route.resource.canonical)
        for route in client.app.router.routes()
        if route.method != "HEAD"
    }
    assert documented == served


async def test_generated_requests_get_no_undeclared_5xx_and_no_off_schema_answer(
    tmp_path, music_dir, database_url, toy_analyzer
):
    for number in range(TRACKS):
        write_wav(music_dir / f"{number}.wav", 400 + 50 * number)
    process, port = start_host_process(
        tmp_path,
        music_dir,
        SOUNDSPAN_DATABASE_URL=database_url,
        SOUNDSPAN_MUSICNN__ENABLED="true",  # so text search has an answer (its tags)
        SOUNDSPAN_MUSICNN__WORKERS="1",
        SOUNDSPAN_WATCHER__DEBOUNCE_SECONDS="0.2",
        PYTHONPATH=os.pathsep.join([str(toy_analyzer), os.environ.get("PYTHONPATH", "")]),
    )
    try:
        wait_healthy(process, port)
        base_url = f"http://127.0.0.1:{port}"
        engine = create_async_engine(async_url(database_url))
        try:
            await eventually(lambda: settled(engine, TRACKS), timeout=180, what="the analyses")
        finally:
            await engine.dispose()
        track_ids = [track["id"] for track in get_json(f"{base_url}/api/tracks")["tracks"]]
        status = get_json(f"{base_url}/api/vibe/status")
        analyzers = [analyzer["name"] for analyzer in status["analyzers"]]
        served = get_json(f"{base_url}/api/openapi.json")
        await asyncio.to_thread(run_schemathesis, served, base_url, MODES)
        # again, positive only, where a request takes ids or analyzers: now only real ones
        real = with_real_values(served, track_ids, analyzers)
        successes = await asyncio.to_thread(
            run_schemathesis, real, base_url, [GenerationMode.POSITIVE], changed(served, real)
        )
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert "Traceback" not in output, output
    # the fuzzing reached the answers that need real ids, not only their errors
    for operation in NEED_REAL_IDS:
        assert successes[operation] > 0, (operation, dict(successes))


def with_real_values(spec: dict, track_ids: list[str], analyzers: list[str]) -> dict:
    """The document with every track id and analyzer name that a request takes (in its path,
    query or body, a mix's ids-or-texts too) narrowed to real ones, and a track named by its
    id alone where a query could name it other ways; answers stay as they are."""
    spec = copy.deepcopy(spec)
    by_parameter = {"track_id": track_ids, "analyzer": analyzers}
    real_ids = {"enum": track_ids}

    def become(schema: dict, values: list[str]) -> None:
        schema.clear()
        schema["enum"] = values

    def narrow(node) -> None:
        children = node if isinstance(node, list) else list(node.values())
        for child in children:
            if isinstance(child, list | dict):
                narrow(child)
        if not isinstance(node, dict):
            return
        if {key: value for key, value in node.items() if key not in WORDS} == TRACK_ID:
            become(node, track_ids)
        if node.get("in") in ("path", "query") and node["name"] in by_parameter:
            become(node["schema"], by_parameter[node["name"]])
        properties = node.get("properties", {})
        if "analyzer" in properties:
            become(properties["analyzer"], analyzers)
        for mix_items in ("add", "subtract"):
            if mix_items in properties:
                become(properties[mix_items]["items"], track_ids)

    def named_by_id(parameter: dict) -> bool:
        return parameter["schema"] == real_ids

    bodies = []
    for operations in spec["paths"].values():
        for operation in operations.values():
            parameters = operation.get("parameters", [])
            narrow(parameters)
            if any(map(named_by_id, parameters)):
                operation["parameters"] = [
                    parameter | {"required": parameter.get("required") or named_by_id(parameter)}
                    for parameter in parameters
                    if not OTHER_TRACK_NAMES.search(parameter["name"])
                ]
            bodies += [operation["requestBody"]] if "requestBody" in operation else []
    # bodies nest models by reference: those are requests too
    referenced = set(re.findall(r'"#/components/schemas/(\w+)"', json.dumps(bodies)))
    narrow(bodies + [spec["components"]["schemas"][name] for name in referenced])
    return spec


def changed(spec: dict, other: dict) -> set[tuple[str, str]]:
    """(METHOD, path) of the operations that differ between two documents."""
    return {
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
        if operation != other["paths"][path][method]
    }


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=30) as answer:
        return json.load(answer)


def run_schemathesis(
    spec: dict,
    base_url: str,
    modes: list[GenerationMode],
    only: set[tuple[str, str]] | None = None,
) -> Counter:
    """Fuzz every operation (or `only` these); returns how many positive cases of each got
    a 2xx answer."""
    schema = schemathesis.openapi.from_dict(spec)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == sum(len(methods) for methods in spec["paths"].values())
    successes = Counter()
    for operation in operations:
        if only is not None and (operation.method.upper(), operation.path) not in only:
            continue
        for mode in modes:

            @hypothesis.settings(
                max_examples=25,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(hypothesis.HealthCheck),
            )
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            def check(case) -> None:
                positive = mode is GenerationMode.POSITIVE  # noqa: B023
                response = case.call(base_url=base_url, timeout=30)
                status = response.status_code
                declared = spec["paths"][case.operation.path][case.method.lower()]["responses"]
                # a 503 the document declares (no analyzer with embeddings, no music server
                # to send a playlist to) is a deliberate answer; any other 5xx is a fault
                assert status < 500 or (status == 503 and "503" in declared), (
                    case.path,
                    response.text,
                )
                if not positive and status == 413:
                    return  # a spoiled body over the 1 MiB limit: rejected, as it should be
                excluded = [not_a_server_error] if status == 503 else []
                if status == 400 and any(rule in response.text for rule in UNSTATED_RULES):
                    excluded.append(positive_data_acceptance)
                case.validate_response(response, excluded_checks=excluded)
                if positive and response.status_code < 300:
                    successes[f"{case.method} {case.path}"] += 1

            try:
                check()
            except hypothesis.errors.Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # an operation with no input to spoil
            except Exception as error:
                pytest.fail(f"{operation.method.upper()} {operation.path} ({mode.value}): {error}")
    return successes
