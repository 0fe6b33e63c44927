"""Ingest: the library follows the music dir by itself, and a reconcile catches up after downtime.

Emits `soundspan_library_event` for every file that appears, changes, moves or vanishes; it
never talks to an analyzer. The engine is `ingest` (on `watching`, which follows the disk,
`files`, what is read of a file, and `reading`, the processes that read them), its routes `api`;
`plugin` speaks our hooks.
"""
