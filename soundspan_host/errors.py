"""Errors a user can meet before the host serves: each is one line that says what to fix."""


class ConfigError(Exception):
    """Bad settings, an unreachable database or a missing folder: exit code 2."""
