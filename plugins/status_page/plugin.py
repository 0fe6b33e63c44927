"""The status_page plugin's hooks: what the host registers (see __init__.py for the plugin)."""

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
