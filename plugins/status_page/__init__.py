"""The status page at GET /: one server-rendered HTML page, no build step, whose inline script
fetches every figure it shows from the JSON API (progress, failures, search, similar tracks,
the library map) and refreshes itself.

It renders HTML and nothing else: it imports no other plugin and knows nothing about models.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from string import Template

from aiohttp import web
from pydantic import Field

from soundspan_hooks import HOST, PluginSettings, SettingsSection, hookimpl

NAME = "status_page"
PAGE_FOLDER = Path(__file__).parent


class StatusPageSettings(PluginSettings):
    refresh_seconds: float = Field(
        5.0, ge=1, description="How often the page fetches analysis progress and failures."
    )
    map_refresh_seconds: float = Field(
        60.0, ge=5, description="How often the page fetches the library map again."
    )


@dataclass(frozen=True)
class RenderedPage:
    html: bytes
    headers: dict[str, str]


@functools.lru_cache(maxsize=4)
def render_page(settings: StatusPageSettings) -> RenderedPage:
    """The page with its settings filled in, and headers that let only its own inline style
    and script run: no other origin is ever reached, and injected markup could run nothing."""
    style = (PAGE_FOLDER / "page.css").read_text()
    script = (PAGE_FOLDER / "page.js").read_text()
    html = Template((PAGE_FOLDER / "page.html").read_text()).substitute(
        style=style,
        script=script,
        refresh_seconds=f"{settings.refresh_seconds:g}",
        map_refresh_seconds=f"{settings.map_refresh_seconds:g}",
    )
    policy = (
        "default-src 'none'; connect-src 'self'; img-src 'self' data:; "
        f"style-src {_digest(style)}; script-src {_digest(script)}; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    headers = {
        "Content-Security-Policy": policy,
        "Cache-Control": "no-cache",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
    }
    return RenderedPage(html.encode(), headers)


def _digest(inline: str) -> str:
    return f"'sha256-{base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()}'"


routes = web.RouteTableDef()


@routes.get("/")
async def status_page(request: web.Request) -> web.Response:
    """The status page; open without a token, its script sends the one the person types in."""
    page = render_page(request.app[HOST].section(NAME))
    return web.Response(
        body=page.html, content_type="text/html", charset="utf-8", headers=page.headers
    )


@hookimpl
def soundspan_settings() -> SettingsSection:
    return SettingsSection(NAME, StatusPageSettings)


@hookimpl
def soundspan_routes() -> web.RouteTableDef:
    return routes


@hookimpl
def soundspan_openapi() -> dict:
    html = {"text/html": {"schema": {"type": "string"}}}
    return {
        "paths": {
            "/": {
                "get": {
                    "summary": "The status page: progress, failures, search and the library map",
                    "security": [],
                    "responses": {"200": {"description": "OK", "content": html}},
                }
            }
        }
    }
