"""The default CLAP model, fetched from the hub into the data dir, and retried while it cannot be.

`[clap] model` may name a checkpoint in a hub repository, `owner/repo:file.pt` (optionally
`owner/repo@revision:file.pt`). Its file lands in `<data_dir>/models/clap/owner--repo/`, and a
.pt's text tower needs roberta-base's tokenizer, which lands beside it; from then on the host
loads them as local files and never asks the hub again.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from soundspan_hooks.coordinator import back_off

from .download import DownloadProgress, HubFile, fetch, remote_size
from .errors import ClapUnavailable, missing_extra, setting

log = logging.getLogger(__name__)

DEFAULT_MODEL = "lukewys/laion_clap:music_audioset_epoch_15_esc_90.14.pt"
TOKENIZER_REPO = "FacebookAI/roberta-base"
# what AutoTokenizer needs to build RoBERTa's tokenizer: config.json names the model type
TOKENIZER_FILES = ("config.json", "tokenizer.json")
RETRY_CAP_SECONDS = 3600.0

_HUB_CHECKPOINT = re.compile(
    r"^(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<revision>[\w.-]+))?:(?P<filename>[\w.-]+\.(?:pt|pth|ckpt))$"
)


@dataclass(frozen=True)
class HubCheckpoint:
    """A laion-clap checkpoint in a hub repository, and where its local copy lives."""

    repo: str
    filename: str
    revision: str | None
    models_dir: Path

    @property
    def checkpoint(self) -> Path:
        return self.models_dir / self.repo.replace("/", "--") / self.filename

    @property
    def tokenizer(self) -> Path:
        return self.models_dir / TOKENIZER_REPO.replace("/", "--")

    def files(self, with_tokenizer: bool) -> list[HubFile]:
        tokenizer = [
            HubFile(TOKENIZER_REPO, name, self.tokenizer / name)
            for name in TOKENIZER_FILES
            if with_tokenizer
        ]
        return [*tokenizer, HubFile(self.repo, self.filename, self.checkpoint, self.revision)]

    def missing(self, with_tokenizer: bool) -> list[HubFile]:
        return [file for file in self.files(with_tokenizer) if not file.destination.is_file()]


def hub_checkpoint(model: str, data_dir: Path) -> HubCheckpoint | None:
    """The hub checkpoint `[clap] model` names, or None for a local path or a hub model id."""
    if Path(model).expanduser().exists() or not (found := _HUB_CHECKPOINT.match(model)):
        return None
    return HubCheckpoint(
        found["repo"], found["filename"], found["revision"], data_dir / "models" / "clap"
    )


def fetch_missing(wanted: HubCheckpoint, with_tokenizer: bool, progress: DownloadProgress) -> None:
    """Download every file of `wanted` not yet here (blocking: run it in a thread)."""
    described = [(file, *remote_size(file)) for file in wanted.missing(with_tokenizer)]
    progress.bytes_total = sum(size for _, size, _, _ in described)
    for file, size, etag, url in described:
        log.info("CLAP: downloading %s from %s (%d bytes)", file.filename, file.repo, size)
        fetch(file, size, etag, url, progress)


async def fetch_with_retries(
    wanted: HubCheckpoint,
    with_tokenizer: bool,
    progress: DownloadProgress,
    report: Callable[[str | None], None],
    first_wait: float,
) -> None:
    """Fetch until it works, waiting `first_wait` seconds after a failure, then twice as long
    each time (at most an hour); `report` hears each failure's reason, and None as each try
    starts. ClapUnavailable when retrying cannot help (the hub is switched off here, or the
    clap extra is not installed: no download before it is).

    Not a RefreshCoordinator: this is one download awaited by CLAP's start, which goes on
    once it is done or gives up where retrying cannot help; nothing is kept fresh after."""
    if (missing := missing_extra()) is not None:
        raise missing
    import httpx2
    from huggingface_hub.errors import OfflineModeIsEnabled

    failures = 0
    while True:
        report(None)
        try:
            await asyncio.to_thread(fetch_missing, wanted, with_tokenizer, progress)
            return
        except OfflineModeIsEnabled:
            raise ClapUnavailable(offline_reason(wanted), setting("model")) from None
        except Exception as error:  # noqa: BLE001 - whatever it was, the task must go on
            failures += 1
            wait = back_off(first_wait, failures, RETRY_CAP_SECONDS)
            reason = (
                f"CLAP model {wanted.repo}:{wanted.filename} could not be downloaded "
                f"({type(error).__name__}: {error}); trying again in {wait:g} s. To use a copy "
                f"you have, set {setting('model')} to the .pt file."
            )
            # the expected troubles (network, hub, a damaged file) in a line; others with
            # their traceback, since they are ours to fix
            expected = isinstance(error, OSError | httpx2.HTTPError)
            log.warning("%s", reason, exc_info=not expected)
            report(reason)
        await asyncio.sleep(wait)


def offline_reason(wanted: HubCheckpoint) -> str:
    return (
        f"CLAP model {wanted.repo}:{wanted.filename} is not downloaded yet ({wanted.checkpoint}) "
        f"and HF_HUB_OFFLINE is set. Unset HF_HUB_OFFLINE to download it, or set "
        f"{setting('model')} to a laion-clap .pt file you have (and {setting('tokenizer')} to a "
        f"roberta-base tokenizer directory)."
    )


def not_downloaded_reason(wanted: HubCheckpoint) -> str:
    return (
        f"CLAP model {wanted.repo}:{wanted.filename} is not downloaded yet ({wanted.checkpoint}) "
        f"and downloads are off. Set {setting('allow_download')} = true, or set "
        f"{setting('model')} to a laion-clap .pt file you have."
    )
