"""MusiCNN's checks for `soundspan-host doctor`: the weights are there, and the GPU if asked."""

from __future__ import annotations

from collections.abc import Mapping

from soundspan_hooks import Check, PluginSettings
from soundspan_plugins.musicnn.inference import cuda_available
from soundspan_plugins.musicnn.network import (
    INSTALL_EXTRA,
    ModelNotAvailable,
    checkpoint_index,
    missing_packages,
)
from soundspan_plugins.musicnn.settings import NAME, MusicnnSettings


def doctor_checks(sections: Mapping[str, PluginSettings]) -> list[Check]:
    settings = sections[NAME]
    assert isinstance(settings, MusicnnSettings)
    if absent := missing_packages():
        return [
            Check(
                "musicnn packages",
                "fail",
                f"not installed: {', '.join(absent)} (MusiCNN's extra)",
                f"{INSTALL_EXTRA}, or set [musicnn] enabled = false",
            )
        ]
    checks = []
    try:
        index = checkpoint_index(settings.model)
        found = index.is_file()
    except ModelNotAvailable as error:
        found, index = False, error
    if found:
        checks.append(Check("musicnn weights", "ok", f"{settings.model}: {index.parent}"))
    else:
        checks.append(
            Check(
                "musicnn weights",
                "fail",
                f"{settings.model} checkpoint not found ({index})",
                "pip install --no-deps musicnn==0.1.0 (make run does it)",
            )
        )
    cuda = cuda_available()
    if settings.device == "cuda" and not cuda:
        checks.append(
            Check(
                "musicnn GPU",
                "fail",
                "device = cuda, but onnxruntime has no CUDA provider",
                "install onnxruntime-gpu and the NVIDIA driver, or set [musicnn] device = auto",
            )
        )
    else:
        detail = "CUDA available: True" if cuda else "CUDA available: False; runs on CPU"
        fix = None if cuda else "for a GPU: onnxruntime-gpu and the NVIDIA driver (optional)"
        checks.append(Check("musicnn GPU", "ok", detail, fix))
    return checks
