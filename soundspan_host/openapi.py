"""The OpenAPI 3.1 document: the host's own paths plus what each plugin declares by hook."""

from __future__ import annotations

from typing import Any

from soundspan_hooks.openapi import json_content, operation
from soundspan_host import __version__

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["status", "message"],
            "properties": {"status": {"type": "integer"}, "message": {"type": "string"}},
        }
    },
}


def build_spec(fragments: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge the plugins' fragments ({"paths": ..., "schemas": ...}) into one document."""
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    for fragment in fragments:
        for path, operations in fragment.get("paths", {}).items():
            paths.setdefault(path, {}).update(operations)
        schemas.update(fragment.get("schemas", {}))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "soundspan host",
            "version": __version__,
            "description": "A vibe index of a music library: similar tracks, text-to-vibe "
            "search, analysis progress.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        # the token is needed only when the host listens beyond loopback
        "security": [{}, {"bearer": []}],
    }


HEALTH = {
    "type": "object",
    "required": ["status", "database"],
    "properties": {
        "status": {"enum": ["ok", "unavailable"]},
        "database": {"enum": ["ok", "unavailable"]},
    },
}
PLUGIN_LIST = {
    "type": "object",
    "required": ["plugins"],
    "properties": {
        "plugins": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "version", "builtin", "enabled", "panels"],
                "properties": {
                    "name": {"type": "string"},
                    "version": {"type": "string"},
                    "builtin": {"type": "boolean"},
                    "enabled": {"type": "boolean"},
                    "panels": {
                        "type": "array",
                        "description": "The status page panels it feeds (soundspan_status_panels)",
                        "items": {
                            "type": "object",
                            "required": ["name", "route"],
                            "properties": {
                                "name": {"type": "string"},
                                "route": {"type": "string"},
                            },
                        },
                    },
                },
            },
        }
    },
}
HOST_OPENAPI = {
    "paths": {
        "/healthz": {
            "get": {
                "summary": "Whether the host and its database answer",
                "security": [],
                "responses": {
                    "200": {"description": "OK", "content": json_content(HEALTH)},
                    "503": {"description": "Database unavailable", "content": json_content(HEALTH)},
                },
            }
        },
        "/api/plugins": {"get": operation("Plugins and their versions", {200: PLUGIN_LIST})},
        "/api/openapi.json": {"get": operation("This document", {200: {"type": "object"}})},
    }
}
