"""soundspan host: a small aiohttp host that loads pluggy plugins. It knows nothing about audio."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("soundspan-host")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
