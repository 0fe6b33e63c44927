"""The status page in a real headless browser: Debian's chromium, driven by playwright."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from playwright.async_api import Browser, Dialog, Page, async_playwright


@asynccontextmanager
async def launched_chromium() -> AsyncIterator[Browser]:
    """Debian's chromium, headless; the test fails (never skips) where it is not installed."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("the status page test needs Debian's chromium: apt-get install chromium")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable)
        yield browser
        await browser.close()


class WatchedPage:
    """A browser page that records what would go wrong unseen: script errors, blocked
    resources, and dialogs (an injected alert)."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.problems: list[str] = []
        page.on("pageerror", lambda error: self.problems.append(f"error: {error}"))
        page.on("dialog", self._dialog)
        page.on(
            "console",
            lambda message: message.type == "error" and self.problems.append(message.text),
        )

    def _dialog(self, dialog: Dialog) -> None:
        self.problems.append(f"dialog: {dialog.message}")
        asyncio.ensure_future(dialog.dismiss())


async def open_page(browser: Browser, url: str) -> WatchedPage:
    """`url` in a new desktop-sized page, watched from before it loads."""
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    watched = WatchedPage(page)
    await page.goto(url)
    return watched
