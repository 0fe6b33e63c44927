"""The quick timings of a test host (the `fast_host` fixture): what a real host waits for in
seconds or minutes (a file to be quiet, the next look at the queue, the next map refresh), a
test host waits for in 0.2 s."""

from __future__ import annotations

import re
import tomllib

# section -> setting -> value, as settings.toml writes it
QUICK = {
    "watcher": {"debounce_seconds": "0.2"},
    "musicnn": {"sleep_interval": "0.2"},
    "clap": {"sleep_interval": "0.2"},
    "vibe_api": {"map_refresh_seconds": "0.2"},
}


def with_quick_timings(settings: str) -> str:
    """`settings` (settings.toml text) with each QUICK timing it does not set itself: added
    under the section's own header where it has one, else in a section appended at the end
    (so top-level settings may open the text, as in a real file)."""
    if settings and not settings.endswith("\n"):
        settings += "\n"
    given = tomllib.loads(settings)
    for section, timings in QUICK.items():
        own = given.get(section, {})
        lines = "".join(f"{key} = {value}\n" for key, value in timings.items() if key not in own)
        if not lines:
            continue
        header = re.search(rf"^\[{section}\][ \t]*(#.*)?\n", settings, re.MULTILINE)
        if header:
            settings = settings[: header.end()] + lines + settings[header.end() :]
        else:
            assert section not in given, f"write [{section}] as a table header: {settings!r}"
            settings += f"[{section}]\n{lines}"
    return settings
