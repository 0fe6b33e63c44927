"""The status page at /, in a real headless browser (Debian's chromium, driven by playwright)
against a real host over HTTP: progress, a failure with its reason, search, similar tracks,
the library map, the API token a person types in, and a result list sent to a real Subsonic
server.

The library is the vectors test analyzer's (known embeddings, tags "north" and "south") plus
one file that is not audio, named like markup to prove the page shows names as text.
"""

import os
from pathlib import Path

import pytest
from playwright.async_api import expect

from soundspan_hooks import HOST
from soundspan_host import __version__
from tests.harness.browser import open_page
from tests.harness.library import eventually, settled
from tests.harness.subsonic_library import SOUTH as SUBSONIC_SOUTH
from tests.harness.subsonic_library import (
    matched_host,
    on_server,
    serving_vector_library,
    user_clients,
)
from tests.harness.vector_library import ARC, OTHERS, write_vector_library

# read at import: the autouse clean_environment fixture drops SOUNDSPAN_* variables and moves
# into tmp_path, so a relative path is taken from where pytest was started
SCREENSHOT = os.environ.get("SOUNDSPAN_SCREENSHOT")
SCREENSHOT_COPY = Path(SCREENSHOT).resolve() if SCREENSHOT else None
pytestmark = pytest.mark.usefixtures("vector_analyzer")
# chromium, the host and its map share two slow cores in CI: 5 s (the default) is too little
expect.set_options(timeout=30_000)
BROKEN = "<img src=x onerror=alert(1)>.wav"
TOKEN = "status-page-token-0123456789"
SOUTH = {"south/a.wav", "south/b.wav", "south/caf\ufffd.wav"}  # as the page shows them
# where on the map canvas (in CSS pixels) a dot of this colour is drawn
FIND_COLOUR = """(canvas, colour) => {
  const [r, g, b] = colour.match(/\\d+/g).map(Number);
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  const scale = canvas.width / canvas.clientWidth;
  for (let i = 0; i < pixels.length; i += 4) {
    const [red, green, blue, alpha] = pixels.slice(i, i + 4);
    const near = Math.abs(red - r) + Math.abs(green - g) + Math.abs(blue - b);
    if (alpha > 200 && near < 12) {
      return [((i / 4) % canvas.width) / scale, Math.floor(i / 4 / canvas.width) / scale];
    }
  }
  return null;
}"""


@pytest.fixture
def server(tmp_path, music_dir):
    """A real supysonic server with the same library."""
    with serving_vector_library(tmp_path, music_dir) as running:
        yield running


async def test_the_status_page_shows_progress_failures_search_similar_and_the_map(
    fast_host, music_dir, browser, tmp_path
):
    write_vector_library(music_dir)
    (music_dir / BROKEN).write_bytes(b"these are my notes, not music\n" * 20)
    host = await fast_host()
    tracks = ARC + len(OTHERS) + 1
    await eventually(lambda: settled(host.app[HOST].engine, tracks), what="library")

    watched = await open_page(browser, str(host.make_url("/")))
    page = watched.page
    card = page.locator('[data-analyzer="vectors"]')
    await expect(card.get_by_role("progressbar")).to_have_attribute(
        "aria-valuenow", str(tracks - 1)
    )
    await expect(card.get_by_role("progressbar")).to_have_attribute("aria-valuemax", str(tracks))
    await expect(card).to_contain_text(f"{tracks - 1} of {tracks} tracks analyzed")
    await expect(card).to_contain_text("1 failed")
    await expect(card).to_contain_text("untrained weights")
    await expect(card).to_contain_text("first-samples")
    await expect(page.locator("#library")).to_contain_text(f"{tracks} tracks")
    await expect(page.locator("#host-line")).to_have_text(
        f"soundspan host {__version__} · database ok"
    )

    failure = page.locator("#failures tbody tr")
    await expect(failure).to_have_count(1)
    await expect(failure).to_contain_text(BROKEN)
    await expect(failure).to_contain_text("not a readable WAV file")
    await expect(page.locator("#failures img")).to_have_count(0)

    await expect(page.locator("#map")).to_have_attribute("data-points", str(tracks - 1))
    await expect(page.locator('#legend [data-label="north"]')).to_contain_text("(13)")
    await expect(page.locator('#legend [data-label="south"]')).to_contain_text("(3)")
    south_colour = await page.locator('#legend [data-label="south"] .swatch').evaluate(
        "swatch => getComputedStyle(swatch).backgroundColor"
    )
    where = await page.locator("#map").evaluate(FIND_COLOUR, south_colour)
    await page.locator("#map").click(position={"x": where[0], "y": where[1]})
    await expect(page.locator("#results-title")).to_contain_text("Like")
    results = page.locator("#results li")
    await expect(results).to_have_count(ARC + len(OTHERS) - 1)
    nearest = await results.locator(".path").all_inner_texts()
    assert set(nearest[:2]) < SOUTH  # the south dots overlap: any of them

    await page.locator("#search-input").fill("south")
    await page.locator("#search-input").press("Enter")
    await expect(results).to_have_count(3)
    assert set(await results.locator(".path").all_inner_texts()) == SOUTH

    await results.filter(has_text="south/a.wav").get_by_role("button", name="similar").click()
    await expect(page.locator("#results-title")).to_contain_text("Like “a.wav”")
    await expect(results).to_have_count(ARC + len(OTHERS) - 1)
    nearest = await results.locator(".path").all_inner_texts()
    assert set(nearest[:2]) == SOUTH - {"south/a.wav"}

    shot = await page.screenshot(path=tmp_path / "status-page.png", full_page=True)
    if SCREENSHOT_COPY is not None:
        SCREENSHOT_COPY.parent.mkdir(parents=True, exist_ok=True)
        SCREENSHOT_COPY.write_bytes(shot)
    assert watched.problems == []


async def test_the_page_asks_for_the_api_token_and_remembers_it(fast_host, browser):
    host = await fast_host(f'api_token = "{TOKEN}"\n')
    page = (await open_page(browser, str(host.make_url("/")))).page
    await expect(page.locator("#token")).to_be_visible()
    await expect(page.locator("#analyzers-note")).to_contain_text("waiting for the API token")

    await page.locator("#token-input").fill(TOKEN)
    await page.locator("#token-input").press("Enter")
    await expect(page.locator('[data-analyzer="vectors"]')).to_be_visible()
    await expect(page.locator("#token")).to_be_hidden()

    await page.reload()
    await expect(page.locator('[data-analyzer="vectors"]')).to_be_visible()
    await expect(page.locator("#token")).to_be_hidden()


async def test_a_result_list_goes_to_the_users_music_server_and_is_updated_in_place(
    fast_host, browser, server
):
    """The page's "Send to my server" button, against a real Subsonic server (supysonic)."""
    client = await matched_host(fast_host, server)
    watched = await open_page(browser, str(client.make_url("/")))
    page = watched.page

    await page.locator("#search-input").fill("south")
    await page.locator("#search-input").press("Enter")
    await expect(page.locator("#results li")).to_have_count(len(SUBSONIC_SOUTH))
    await expect(page.locator("#send-form")).to_be_visible()
    await page.locator("#send-name").fill("Down south")
    await page.locator("#send-user").select_option("alice")
    send = page.get_by_role("button", name="Send to my server")
    await send.click()
    await expect(page.locator("#send-note")).to_contain_text("Made “Down south” for alice: 2 songs")
    await send.click()
    await expect(page.locator("#send-note")).to_contain_text("Updated “Down south” for alice")

    async with user_clients() as as_user:
        [songs] = await on_server(as_user(server, "alice"), "Down south")  # one, not two
    assert sorted(songs) == sorted(SUBSONIC_SOUTH)
    assert watched.problems == []
