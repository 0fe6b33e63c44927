"""The soundspan hook contract: every way a plugin meets the host or another plugin.

Read `hookspecs.py` top to bottom for the hooks, `types.py` for what they carry,
`analyzers.py` for what an analyzer is and `library_views.py` for what plugins may read of
the database.
A plugin's commands reach the host with `cli.py` and print with `cli_tables.py`; what it
keeps fresh in the background (a refresh, a retry until something works) runs on the
`RefreshCoordinator` of `coordinator.py`.
Plugins import only this package, never each other.
"""

from soundspan_hooks.analyzers import Analyzer, EmbedsText, KeepsTags, by_search_rank
from soundspan_hooks.coordinator import RefreshCoordinator, RefreshStatus
from soundspan_hooks.hookspecs import hookimpl, hookspec
from soundspan_hooks.types import (
    HOST,
    TRACK_TAG_TYPES,
    TRACK_TAGS,
    AnalyzerInfo,
    Check,
    ContentScore,
    HostContext,
    LibraryEvent,
    LibraryEventKind,
    PluginSettings,
    RankedTrack,
    SettingsSection,
    StatusPanel,
    StoreResult,
    TagSearch,
    TextEmbedding,
    TrackFacts,
    TrackFile,
    TrackUnavailable,
    UnreadableTrack,
    WorkerCount,
    WorkerShare,
    legacy_env,
)

__all__ = [
    "HOST",
    "TRACK_TAGS",
    "TRACK_TAG_TYPES",
    "Analyzer",
    "AnalyzerInfo",
    "Check",
    "ContentScore",
    "EmbedsText",
    "HostContext",
    "KeepsTags",
    "LibraryEvent",
    "LibraryEventKind",
    "PluginSettings",
    "RankedTrack",
    "RefreshCoordinator",
    "RefreshStatus",
    "SettingsSection",
    "StatusPanel",
    "StoreResult",
    "TagSearch",
    "TextEmbedding",
    "TrackFacts",
    "TrackFile",
    "TrackUnavailable",
    "UnreadableTrack",
    "WorkerCount",
    "WorkerShare",
    "by_search_rank",
    "hookimpl",
    "hookspec",
    "legacy_env",
]
