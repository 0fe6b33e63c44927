"""The soundspan hook contract: every way a plugin meets the host or another plugin.

Read `hookspecs.py` top to bottom for the hooks, `types.py` for what they carry.
Plugins import only this package, never each other.
"""

from soundspan_hooks.hookspecs import hookimpl, hookspec
from soundspan_hooks.types import (
    HOST,
    AnalyzerInfo,
    Check,
    ContentScore,
    HostContext,
    LibraryEvent,
    LibraryEventKind,
    PluginSettings,
    RankedTrack,
    SettingsSection,
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
    "AnalyzerInfo",
    "Check",
    "ContentScore",
    "HostContext",
    "LibraryEvent",
    "LibraryEventKind",
    "PluginSettings",
    "RankedTrack",
    "SettingsSection",
    "StoreResult",
    "TagSearch",
    "TextEmbedding",
    "TrackFacts",
    "TrackFile",
    "TrackUnavailable",
    "UnreadableTrack",
    "WorkerCount",
    "WorkerShare",
    "hookimpl",
    "hookspec",
    "legacy_env",
]
