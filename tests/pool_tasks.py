"""Functions the model-pool tests run in worker processes (spawned workers import them)."""

import os

LOADS: list[str] = []


def load_model(name: str) -> dict:
    LOADS.append(name)
    return {
        "name": name,
        "loads_in_this_process": len(LOADS),
        "threads": os.environ["OMP_NUM_THREADS"],
    }


def describe(model: dict, suffix: str) -> tuple[int, str, int, str]:
    return os.getpid(), model["name"] + suffix, model["loads_in_this_process"], model["threads"]


def broken_load() -> None:
    raise RuntimeError("weights are corrupt")


def refuse(model: dict, path: str) -> None:
    from soundspan_plugins.shared.audio import UnreadableAudio

    raise UnreadableAudio(path, "the file is empty (0 bytes).")
