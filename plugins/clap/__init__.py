"""CLAP analyzer: a text-audio embedding of every whole track, and text queries embedded for search.

Weights come from a laion-clap checkpoint on the hub (by default the one soundspan uses,
downloaded in the background into the data dir on first start), a local Hugging Face directory,
a hub id already in the local cache, or a local laion-clap `.pt`. While they download, or when
none can be loaded, the analyzer says so in the status and everything else keeps working. The
audio tower runs in this plugin's process pool; the text tower in a process of its own that a
text search starts and idleness stops (text_tower.py), so a search never waits behind the
analysis queue and its memory is held only while searches come.

The hooks live here; analyzer.py is the analyzer the host keeps, runtime.py starts the model
(text tower, audio pool), settings.py holds the [clap] section, doctor.py the doctor's checks.
torch and transformers are imported only in the processes that load a model (the export, the
text tower, a torch audio tower), so the host itself never pays for them on a CPU.
"""

from __future__ import annotations

from pathlib import Path

from soundspan_hooks import Check, HostContext, SettingsSection, hookimpl
from soundspan_plugins.clap.analyzer import ClapAnalyzer
from soundspan_plugins.clap.runtime import running
from soundspan_plugins.clap.settings import NAME, ClapSettings


@hookimpl
def soundspan_settings() -> SettingsSection:
    return SettingsSection(NAME, ClapSettings)


@hookimpl
def soundspan_migrations() -> Path:
    return Path(__file__).parent / "migrations"


@hookimpl
def soundspan_analyzers(host: HostContext) -> list[ClapAnalyzer]:
    return [ClapAnalyzer(host)]


@hookimpl
def soundspan_lifespan(host: HostContext):
    return running(host)


@hookimpl
def soundspan_doctor(sections, music_dir, data_dir) -> list[Check]:
    """Loads the text tower as the host would, so the answer is the host's own."""
    from soundspan_plugins.clap.doctor import doctor_checks

    return doctor_checks(sections, data_dir)
