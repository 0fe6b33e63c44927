"""The test plugins beside the tests (echo, toy, vectors), installed the way pip installs a
third-party plugin: a module, its migrations and a dist-info with an entry point."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from soundspan_host.plugins import load_plugins
from soundspan_host.settings import read_settings

TESTS = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class PluginSource:
    """A test plugin's folder under tests/, and the distribution it is installed as."""

    folder: str
    module: str
    name: str
    version: str

    @property
    def source(self) -> Path:
        return TESTS / self.folder

    def install(self, site: Path) -> Path:
        """Install it as a real distribution with an entry point, into `site`; returns `site`."""
        site.mkdir(exist_ok=True)
        shutil.copy(self.source / f"{self.module}.py", site)
        shutil.copytree(self.source / "migrations", site / f"{self.module}_migrations")
        dist_info = site / f"{self.module}-{self.version}.dist-info"
        dist_info.mkdir()
        (dist_info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {self.module.replace('_', '-')}\n"
            f"Version: {self.version}\n"
        )
        (dist_info / "entry_points.txt").write_text(
            f"[soundspan_host.plugins]\n{self.name} = {self.module}\n"
        )
        return site


# settings, a migration, a lifespan and a route
ECHO_PLUGIN = PluginSource("echo_plugin", "soundspan_test_echo", "echo", "1.2.3")
# reads WAV files; its settings make it slow, failing or held, as a test needs
TOY_ANALYZER = PluginSource("toy_analyzer", "soundspan_test_toy", "toy", "0.1.0")
# a WAV's first eight samples are its embedding, so every list is known in advance
VECTOR_ANALYZER = PluginSource("vector_analyzer", "soundspan_test_vectors", "vectors", "0.1.0")
TEST_PLUGINS = (ECHO_PLUGIN, TOY_ANALYZER, VECTOR_ANALYZER)


def enabled_hooks(folder: Path, settings_text: str) -> SimpleNamespace:
    """What a host started on this settings.toml (written in `folder`) holds of its plugins:
    `.hook`, the hooks of the enabled ones."""
    path = folder / "settings.toml"
    path.write_text(settings_text)
    return SimpleNamespace(hook=load_plugins(read_settings(path)).manager.hook)
