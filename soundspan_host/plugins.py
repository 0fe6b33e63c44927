"""The plugin manager: built-in plugins are ordinary plugins, third-party ones come by entry point.

Every known plugin is registered long enough to declare its settings; the ones whose section
says `enabled = false` are then unregistered, so a disabled plugin never runs a hook.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType

import pluggy
from aiohttp import web

import soundspan_hooks
from soundspan_hooks import hookspecs
from soundspan_host import __version__
from soundspan_host.errors import ConfigError
from soundspan_host.settings import RawSettings, Settings, validate_settings

ENTRY_POINT_GROUP = "soundspan_host.plugins"

BUILTIN_PLUGINS: dict[str, str] = {  # name in settings.toml -> module
    "watcher": "soundspan_plugins.watcher.plugin",
    "musicnn": "soundspan_plugins.musicnn.plugin",
    "clap": "soundspan_plugins.clap.plugin",
    "vibe_api": "soundspan_plugins.vibe_api.plugin",
    "status_page": "soundspan_plugins.status_page.plugin",
    "subsonic": "soundspan_plugins.subsonic.plugin",
    "jellyfin": "soundspan_plugins.jellyfin.plugin",
    "lyrion": "soundspan_plugins.lyrion.plugin",
    "instant_mix": "soundspan_plugins.instant_mix.plugin",
}


@dataclass(frozen=True)
class LoadedPlugin:
    """A plugin the host knows, for /api/plugins and the logs."""

    name: str
    version: str
    builtin: bool
    enabled: bool


@dataclass(frozen=True)
class Plugins:
    """The plugin manager with only enabled plugins registered, and what each known plugin is."""

    manager: pluggy.PluginManager
    known: tuple[LoadedPlugin, ...]
    settings: Settings

    @property
    def enabled(self) -> tuple[LoadedPlugin, ...]:
        return tuple(plugin for plugin in self.known if plugin.enabled)


PLUGINS = web.AppKey("soundspan_plugins", Plugins)
"""Where the host's own routes find the plugins and settings: `request.app[PLUGINS]`."""


def load_plugins(raw: RawSettings) -> Plugins:
    """Import every known plugin, validate all settings, keep the enabled plugins registered."""
    manager = pluggy.PluginManager("soundspan")
    manager.add_hookspecs(hookspecs)
    candidates: list[tuple[str, object, str, bool]] = []
    for name, module_name in BUILTIN_PLUGINS.items():
        candidates.append((name, _import_builtin(name, module_name), __version__, True))
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        candidates.append(
            (entry_point.name, _load_entry_point(entry_point), _dist_version(entry_point), False)
        )

    for name, plugin, _, _ in candidates:
        if manager.has_plugin(name):
            raise ConfigError(f"two plugins are called {name!r}; uninstall one of them")
        manager.register(plugin, name=name)
    declared = [_own_section(impl) for impl in manager.hook.soundspan_settings.get_hookimpls()]
    settings = validate_settings(raw, declared)

    known = []
    for name, plugin, version, builtin in candidates:
        section = settings.sections.get(name)
        enabled = section.enabled if section is not None else True
        if not enabled:
            manager.unregister(plugin)
        known.append(LoadedPlugin(name=name, version=version, builtin=builtin, enabled=enabled))
    return Plugins(manager=manager, known=tuple(known), settings=settings)


def _own_section(impl: pluggy.HookImpl) -> soundspan_hooks.SettingsSection:
    section = impl.function()
    if section.name != impl.plugin_name:
        raise ConfigError(
            f"plugin {impl.plugin_name!r} declares settings section [{section.name}]; "
            "a plugin owns the section named after it"
        )
    return section


def _import_builtin(name: str, module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(
            f"built-in plugin {name!r} cannot be imported ({error}); "
            f"reinstall soundspan-host, or set [{name}] enabled = false"
        ) from error


def _load_entry_point(entry_point: EntryPoint) -> object:
    try:
        return entry_point.load()
    except Exception as error:  # a broken third-party plugin must name itself
        raise ConfigError(
            f"plugin {entry_point.name!r} ({entry_point.value}) failed to load: {error}"
        ) from error


def _dist_version(entry_point: EntryPoint) -> str:
    return entry_point.dist.version if entry_point.dist is not None else "unknown"
