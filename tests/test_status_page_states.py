"""The status page's words for each analyzer state and each kind of search, in a real browser
against one real host.

The toy analyzer describes itself from a JSON file the test rewrites (its `described_as`
setting), so one host shows it downloading, loading, ready with trained weights and then
unavailable (an analyzer unavailable at start-up gets no worker); the vectors analyzer beside
it stays ready with untrained weights and answers searches by tags while the toy embeds none.
"""

import base64
import json
import os
from pathlib import Path

import pytest
from playwright.async_api import Locator, Page, expect

from tests.harness.browser import open_page
from tests.harness.vector_library import OTHERS, write_vector_wav

# read at import, like tests/test_status_page.py's SOUNDSPAN_SCREENSHOT: where to copy the
# picture of the states this test saw (docs/status-page-states.png, for the README)
SCREENSHOT = os.environ.get("SOUNDSPAN_STATES_SCREENSHOT")
SCREENSHOT_COPY = Path(SCREENSHOT).resolve() if SCREENSHOT else None
pytestmark = pytest.mark.usefixtures("toy_analyzer", "vector_analyzer")
expect.set_options(timeout=30_000)
REASON = "no weights in /models/toy: set [toy] model_dir, or allow downloads"
DOWNLOAD = {
    "file": "toy.onnx",
    "bytes_done": 245_000_000,
    "bytes_total": 700_000_000,
    "bytes_per_second": 12_000_000,
    "eta_seconds": 40,
}
PHONE = {"width": 390, "height": 844}


async def search(page: Page, text: str) -> None:
    await page.locator("#search-input").fill(text)
    await page.locator("#search-input").press("Enter")
    await expect(page.locator("#results-title")).to_contain_text(f"for “{text}”")


async def fits_the_width(page: Page) -> bool:
    return await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


async def shot(part: Locator) -> str:
    return base64.b64encode(await part.screenshot()).decode()


async def answer_shot(page: Page) -> str:
    """The search panel down to its last result: the panel itself is as tall as the map's."""
    panel = await page.locator('[aria-labelledby="search-title"]').bounding_box()
    results = await page.locator("#results").bounding_box()
    scrolled = await page.evaluate("window.scrollY")
    clip = {
        **panel,
        "y": panel["y"] + scrolled,
        "height": results["y"] + results["height"] - panel["y"] + 12,
    }
    return base64.b64encode(await page.screenshot(clip=clip, full_page=True)).decode()


def picture_of(shots: list[tuple[str, str]]) -> str:
    """One page of the cards and search answers the test saw, each captioned."""
    figures = "".join(
        f'<figure><figcaption>{caption}</figcaption><img src="data:image/png;base64,{png}">'
        "</figure>"
        for caption, png in shots
    )
    return (
        "<style>body{margin:0;padding:16px;background:#f4f6f8;font:14px system-ui}"
        "main{display:grid;grid-template-columns:repeat(2,max-content);gap:16px}"
        "figure{margin:0}figcaption{color:#5f6b76;margin-bottom:4px}img{display:block}"
        f"</style><main>{figures}</main>"
    )


async def test_each_analyzer_state_and_each_search_is_said_in_true_words(
    fast_host, music_dir, browser, tmp_path
):
    for path, vector in OTHERS.items():
        write_vector_wav(music_dir / path, vector)
    described = tmp_path / "toy-described-as.json"
    finish = tmp_path / "toy-may-finish"

    def describe_toy(**fields) -> None:
        described.write_text(json.dumps(fields))

    # an analyzer unavailable at start-up gets no worker: the toy starts on its way instead
    describe_toy(state="downloading", download=DOWNLOAD)
    host = await fast_host(
        "[status_page]\nrefresh_seconds = 1\n"
        f'[toy]\ndescribed_as = "{described}"\nhold_until = "{finish}"\n'
    )
    watched = await open_page(browser, str(host.make_url("/")))
    page = watched.page
    toy = page.locator('[data-analyzer="toy"]')
    vectors = page.locator('[data-analyzer="vectors"]')
    via = page.locator("#results-via")
    cards, answers = [], []

    await expect(vectors).to_contain_text("Nothing left to analyze.")
    await expect(vectors).to_contain_text("untrained weights: test or random, results mean nothing")
    await expect(vectors.locator(".badge.untrained")).to_be_visible()
    await expect(toy).to_have_attribute("data-state", "downloading")
    await expect(toy.locator(".model")).to_have_text(
        "Model downloading 35 % (245 of 700 MB, 12 MB/s, about 40 s left)."
    )
    await expect(toy.locator(".pace")).to_contain_text(f"{len(OTHERS)} tracks")
    await expect(toy.locator(".pace")).to_contain_text("waiting for the model.")
    await expect(toy.locator(".queued")).to_have_text(
        f"Queued because: new or changed audio ({len(OTHERS)} jobs)"
    )
    cards += [("ready, untrained weights", await shot(vectors))]
    cards += [("downloading", await shot(toy))]

    describe_toy(state="loading")
    await expect(toy).to_have_attribute("data-state", "loading")
    await expect(toy.locator(".model")).to_have_text("Loading model toy-wave-stats…")
    await expect(toy.locator(".pace")).to_contain_text("waiting for the model.")
    cards += [("loading", await shot(toy))]

    # ready: the toy claims its first tracks and holds them, so none has finished yet
    describe_toy(state="ready", trained=True, embeds_text=True)
    await expect(toy).to_have_attribute("data-state", "ready")
    await expect(toy.locator(".model")).to_have_text("trained model toy-wave-stats")
    await expect(toy).to_contain_text("2 running")
    await expect(toy.locator(".pace")).to_contain_text("measuring…")
    await expect(toy.locator(".badge.untrained")).to_have_count(0)
    cards += [("ready, trained, its first tracks running", await shot(toy))]
    finish.touch()
    await expect(toy.locator(".pace")).to_have_text("Nothing left to analyze.")

    await search(page, "south")
    await expect(page.locator("#results li")).to_have_count(len(OTHERS))
    await expect(via).to_have_text("Answered by toy.")
    answers += [("a search by text embedding", await answer_shot(page))]

    describe_toy(state="unavailable", reason=REASON)
    await expect(toy).to_have_attribute("data-state", "unavailable")
    await expect(toy.locator(".model")).to_have_text("No model loaded.")
    await expect(toy.locator(".reason")).to_have_text(REASON)
    await expect(toy).not_to_contain_text("trained")
    cards += [("unavailable", await shot(toy))]

    await search(page, "south")
    await expect(page.locator("#results li")).to_have_count(3)
    await expect(via).to_contain_text("Answered by vectors-tags: no analyzer that understands")
    await expect(via).to_contain_text("Your words matched tags: south.")
    answers += [("a search by tags", await answer_shot(page))]
    await search(page, "quiet strings")
    await expect(page.locator("#results li")).to_have_count(0)
    await expect(via).to_contain_text("They matched no tag, so no track matches them")

    await page.set_viewport_size(PHONE)
    await expect(toy.locator(".reason")).to_be_visible()
    assert await fits_the_width(page), "the page scrolls sideways at a phone's width"
    cards += [("unavailable, at a phone's width", await shot(toy))]
    assert watched.problems == []

    sheet = await browser.new_page(viewport={"width": 1300, "height": 900})
    await sheet.set_content(picture_of(cards + answers))
    picture = await sheet.screenshot(path=tmp_path / "status-page-states.png", full_page=True)
    if SCREENSHOT_COPY is not None:
        SCREENSHOT_COPY.parent.mkdir(parents=True, exist_ok=True)
        SCREENSHOT_COPY.write_bytes(picture)
