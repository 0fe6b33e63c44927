"""The OpenAPI document: valid 3.1, in step with the routes the host really serves, and a
schemathesis run against a real host process finds no 5xx and no answer off the schema."""

import asyncio
import json
import os
import urllib.request

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from openapi_spec_validator import validate
from schemathesis.generation import GenerationMode

from soundspan_host.app import create_app
from tests.library import write_wav
from tests.processes import start_host_process, wait_healthy


async def test_the_document_is_valid_and_matches_the_served_routes(write_settings, aiohttp_client):
    client = await aiohttp_client(create_app(write_settings()))
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


async def test_generated_requests_never_get_a_5xx_or_an_off_schema_answer(
    tmp_path, music_dir, database_url, toy_analyzer
):
    for number in range(3):
        write_wav(music_dir / f"{number}.wav", 400 + 50 * number)
    process, port = start_host_process(
        tmp_path,
        music_dir,
        SOUNDSPAN_DATABASE_URL=database_url,
        SOUNDSPAN_MUSICNN__ENABLED="true",  # so text search has an answer (its tags)
        SOUNDSPAN_MUSICNN__WORKERS="1",
        PYTHONPATH=os.pathsep.join([str(toy_analyzer), os.environ.get("PYTHONPATH", "")]),
    )
    try:
        wait_healthy(process, port)
        base_url = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base_url}/api/openapi.json") as answer:
            spec = json.load(answer)
        await asyncio.to_thread(run_schemathesis, spec, base_url)
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert "Traceback" not in output, output


def run_schemathesis(spec: dict, base_url: str) -> None:
    schema = schemathesis.openapi.from_dict(spec)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == sum(len(methods) for methods in spec["paths"].values())
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @hypothesis.settings(
                max_examples=25,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(hypothesis.HealthCheck),
            )
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            def check(case) -> None:
                response = case.call(base_url=base_url, timeout=30)
                assert response.status_code < 500, (case.path, response.text)
                if mode is GenerationMode.NEGATIVE and response.status_code == 413:  # noqa: B023
                    return  # a spoiled body over the 1 MiB limit: rejected, as it should be
                case.validate_response(response)

            try:
                check()
            except hypothesis.errors.Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # an operation with no input to spoil
            except Exception as error:
                pytest.fail(f"{operation.method.upper()} {operation.path} ({mode.value}): {error}")
