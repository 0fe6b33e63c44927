"""What the watcher's read processes run in tests (spawned workers import them): the real read,
with a worker that dies on the way, as a decoder crash or the OOM killer would end it."""

import os
import signal
from pathlib import Path

from soundspan_plugins.watcher.files import AudioFiles
from soundspan_plugins.watcher.reading import Read, read_files

DIES_ONCE = "dies-once"  # a file whose first read kills the process reading it
DIES_ALWAYS = "dies-always"  # one whose every read does


def read_or_die(files: AudioFiles, relatives: list[str]) -> list[Read]:
    for relative in relatives:
        if DIES_ALWAYS in relative:
            os.kill(os.getpid(), signal.SIGKILL)
        died = files.music_dir / ".died" / Path(relative).name  # hidden: never indexed
        if DIES_ONCE in relative and not died.exists():
            died.parent.mkdir(exist_ok=True)
            died.touch()
            os.kill(os.getpid(), signal.SIGKILL)
    return read_files(files, relatives)


def _refuse_to_load() -> AudioFiles:
    raise RuntimeError("this reader cannot be loaded in a worker process")


class ReaderNoWorkerLoads(AudioFiles):
    """A reader that pickles in the host and fails to load in every worker process, as when
    fresh workers cannot start at all."""

    def __reduce__(self):
        return (_refuse_to_load, ())
