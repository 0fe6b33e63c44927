"""`soundspan doctor`'s CLAP checks: the weights, loaded as the host would (here, in the
doctor's own process), and the GPU."""

from __future__ import annotations

from pathlib import Path

from soundspan_hooks import Check
from soundspan_plugins.clap.errors import INSTALL_EXTRA, missing_packages, setting
from soundspan_plugins.clap.fetching import HubCheckpoint, hub_checkpoint, not_downloaded_reason
from soundspan_plugins.clap.runtime import accept_text_tower, make_runtime, model_source
from soundspan_plugins.clap.settings import NAME, ClapSettings


def doctor_checks(sections, data_dir) -> list[Check]:
    """Loads the text tower as the host would, so the answer is the host's own."""
    if absent := missing_packages():
        found = f"not installed: {', '.join(absent)} (CLAP's extra)"
        fix = f"{INSTALL_EXTRA}, or set {setting('enabled')} = false"
        return [Check("clap packages", "fail", found, fix)]
    import torch

    settings: ClapSettings = sections[NAME]
    runtime = make_runtime(settings, Path(data_dir))
    wanted = hub_checkpoint(settings.model, Path(data_dir))
    if wanted is not None and (missing := wanted.missing(settings.tokenizer is None)):
        weights = _not_downloaded_check(settings, wanted, missing)
    else:
        from soundspan_plugins.clap.text_tower import text_tower_facts

        accept_text_tower(runtime, text_tower_facts(model_source(runtime)))
        if runtime.reason is not None:
            weights = Check("clap weights", "fail", runtime.reason)
        elif not runtime.trained:
            weights = Check(
                "clap weights",
                "warn",
                f"{runtime.model_id} loads, but its weights are untrained",
                "point [clap] model at trained LAION CLAP weights",
            )
        else:
            weights = Check("clap weights", "ok", f"{runtime.model_id}, trained")
    cuda = torch.cuda.is_available()
    gpu = Check(
        "clap GPU",
        "ok" if cuda or settings.device != "cuda" else "fail",
        f"CUDA available: {cuda}; runs on {runtime.device}",
        None if cuda else "for a GPU: a CUDA build of torch and the NVIDIA driver",
    )
    return [weights, gpu]


def _not_downloaded_check(settings: ClapSettings, wanted: HubCheckpoint, missing) -> Check:
    """What a running host does about a checkpoint not here yet, with the partial bytes so far."""
    partial = sum(
        part.stat().st_size
        for file in missing
        for part in file.destination.parent.glob(f"{file.destination.name}.*.part")
    )
    names = ", ".join(file.filename for file in missing)
    if not settings.allow_download:
        return Check("clap weights", "fail", not_downloaded_reason(wanted))
    return Check(
        "clap weights",
        "warn",
        f"{names} not downloaded yet ({partial / 1e6:.0f} MB so far in {wanted.checkpoint.parent}"
        f"); the host downloads it in the background, resuming, and shows the progress in its "
        f"status",
        "start the host with network access to the hub (or HF_ENDPOINT), or set [clap] model "
        "to a local .pt file",
    )
