"""The status page at GET /: one server-rendered HTML page, no build step, whose inline script
fetches every figure it shows from the JSON API (progress, failures, search, similar tracks,
the library map) and refreshes itself.

It renders HTML and nothing else: it imports no other plugin and knows nothing about models.
The hooks live here; api.py renders and serves the page, settings.py holds [status_page].
"""

from __future__ import annotations

from aiohttp import web

from soundspan_hooks import SettingsSection, hookimpl
from soundspan_plugins.status_page.api import routes
from soundspan_plugins.status_page.settings import NAME, StatusPageSettings


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
