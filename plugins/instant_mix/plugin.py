"""The instant_mix plugin's hooks: what the host registers (see __init__.py for the plugin)."""

from __future__ import annotations

from aiohttp import web

from soundspan_hooks import Check, HostContext, SettingsSection, hookimpl
from soundspan_plugins.instant_mix.api import routes
from soundspan_plugins.instant_mix.schema import openapi_fragment
from soundspan_plugins.instant_mix.settings import NAME, InstantMixSettings

# every route of this plugin changes nothing (POST /api/alchemy only computes a list)
READ_ONLY_ROUTES = frozenset(
    (route.method, route.path) for route in routes if isinstance(route, web.RouteDef)
)


@hookimpl
def soundspan_settings() -> SettingsSection:
    return SettingsSection(NAME, InstantMixSettings)


@hookimpl
def soundspan_routes() -> web.RouteTableDef:
    return routes


@hookimpl
def soundspan_openapi() -> dict:
    return openapi_fragment()


@hookimpl
def soundspan_open_without_token(host: HostContext, request: web.Request) -> bool | None:
    method = "GET" if request.method == "HEAD" else request.method
    if (method, request.path) not in READ_ONLY_ROUTES:
        return None
    settings: InstantMixSettings = host.section(NAME)
    return True if settings.trusts(request.remote) else None


# the built-in plugins that match a music server's ids; the doctor reads settings only, so it
# knows them by section (a third-party one answers the hooks all the same)
MUSIC_SERVERS = ("subsonic", "jellyfin", "lyrion")


@hookimpl
def soundspan_doctor(sections, music_dir, data_dir) -> list[Check]:
    """The ids come from a music server plugin: without one every request is refused."""
    servers = [name for name in MUSIC_SERVERS if name in sections and sections[name].enabled]
    if not servers:
        return [
            Check(
                "instant mix",
                "warn",
                "no music server plugin matches song ids: every player's request gets a 409",
                "enable [subsonic] (Navidrome, gonic...), [jellyfin] or [lyrion] for the server"
                " the players use",
            )
        ]
    settings: InstantMixSettings = sections[NAME]
    default = settings.default_server or (
        "subsonic" if "subsonic" in servers or len(servers) > 1 else servers[0]
    )
    if default not in servers:
        why = f"[instant_mix] default_server {default!r} is not enabled"
        if settings.default_server is None:
            why = f"several music server plugins are enabled ({', '.join(servers)})"
        return [
            Check(
                "instant mix",
                "warn",
                f"{why}: a request without server= (every player's plugin) gets an error",
                f"set [instant_mix] default_server to one of {', '.join(servers)}",
            )
        ]
    open_to = ", ".join(settings.clients_without_token)
    return [
        Check(
            "instant mix",
            "ok",
            f"answers the AudioMuse-AI API with the ids of [{default}]'s server"
            + "".join(f", or [{name}]'s with server={name}" for name in servers if name != default)
            + (f"; without a token for {open_to}" if open_to else ""),
        )
    ]
