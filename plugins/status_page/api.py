"""GET /: the page rendered once per settings, its inline script and style hashed for the
Content-Security-Policy."""

from __future__ import annotations

import base64
import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from string import Template

from aiohttp import web

from soundspan_hooks import HOST
from soundspan_plugins.status_page.settings import NAME, StatusPageSettings

PAGE_FOLDER = Path(__file__).parent


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
