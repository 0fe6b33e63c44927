"""The analyzers the enabled plugins provide, each with the plugin it came from."""

from __future__ import annotations

from typing import NamedTuple

from soundspan_hooks import Analyzer, HostContext
from soundspan_host.errors import ConfigError
from soundspan_host.plugins import Plugins


class ProvidedAnalyzer(NamedTuple):
    plugin: str  # the plugin's registered name: worker mode keeps that plugin alone
    analyzer: Analyzer


def provided_analyzers(plugins: Plugins, host: HostContext) -> dict[str, ProvidedAnalyzer]:
    """Ask each plugin once for its analyzers (soundspan_analyzers), keyed by analyzer name.

    Hook implementations are called one by one, not through the relay, so that each answer
    keeps the plugin that gave it."""
    found: dict[str, ProvidedAnalyzer] = {}
    for implementation in plugins.manager.hook.soundspan_analyzers.get_hookimpls():
        arguments = {"host": host}
        answer = implementation.function(*(arguments[name] for name in implementation.argnames))
        for analyzer in answer or ():
            if not isinstance(analyzer, Analyzer):
                raise ConfigError(
                    f"plugin {implementation.plugin_name!r} gave {analyzer!r} as an analyzer: it"
                    " needs a name and info(), analyze() and details() (soundspan_hooks.Analyzer)"
                )
            if analyzer.name in found:
                raise ConfigError(
                    f"two plugins provide an analyzer called {analyzer.name!r}:"
                    f" {found[analyzer.name].plugin!r} and {implementation.plugin_name!r};"
                    " switch one off"
                )
            found[analyzer.name] = ProvidedAnalyzer(implementation.plugin_name, analyzer)
    return found
