"""What a request may hold: JSON as the standard has it, never a number Python's json reads
beyond it (NaN, Infinity), and no nesting that costs a stack; each refused with a 400 that
says why, and nothing stored."""

import pytest
from aiohttp import web
from pydantic import BaseModel

from soundspan_hooks.openapi import parse

# the subsonic plugin validates a fresh playlist before it asks the server anything: a port
# nothing listens on is enough
SUBSONIC = (
    '[subsonic]\nenabled = true\nurl = "http://127.0.0.1:9"\n'
    '[[subsonic.users]]\nname = "alice"\npassword = "secret"\n'
)
PLAYLIST = '{"name": "rain", "user": "alice", "search": "rain", "refresh_seconds": %s}'


@pytest.fixture
async def host(fast_host):
    return await fast_host(SUBSONIC)


@pytest.mark.parametrize("number", ["Infinity", "-Infinity", "NaN"])
async def test_a_number_json_does_not_have_is_refused(host, number):
    """The repro: `"refresh_seconds": Infinity` was a 202, stored as null, and every later
    start died reading it back."""
    answer = await host.post(
        "/api/subsonic/playlists",
        data=PLAYLIST % number,
        headers={"Content-Type": "application/json"},
    )
    assert answer.status == 400
    assert (await answer.json())["error"]["message"] == (
        f"the body is not valid JSON: {number} is not a JSON number"
    )
    assert (await (await host.get("/api/subsonic/playlists")).json())["playlists"] == []


async def test_deeply_nested_json_is_a_400_not_a_crash(host):
    """400 KB of `[` made the decoder overflow the stack: a 500 with a RecursionError."""
    answer = await host.post(
        "/api/vibe/search", data="[" * 400_000, headers={"Content-Type": "application/json"}
    )
    assert answer.status == 400
    assert (await answer.json())["error"]["message"] == "the body is nested too deeply"


class Weights(BaseModel):
    seconds: float
    per_tag: dict[str, list[float]] = {}


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"seconds": "inf"}, "seconds"),
        ({"seconds": "nan"}, "seconds"),
        ({"seconds": 1, "per_tag": {"rain": [0.5, "-inf"]}}, "per_tag.rain.1"),
    ],
)
def test_a_query_or_body_that_parses_to_a_non_finite_number_is_refused(values, where):
    """pydantic reads "inf" in a query string (or any float) as infinity."""
    with pytest.raises(web.HTTPBadRequest) as refused:
        parse(Weights, values)
    assert refused.value.reason == f"{where}: must be a finite number"


def test_finite_numbers_pass():
    assert parse(Weights, {"seconds": "1.5", "per_tag": {"x": [0]}}).seconds == 1.5
