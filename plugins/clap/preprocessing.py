"""The feature extractor and tokenizer that match a loaded CLAP model.

The audio front end must match the audio tower exactly (mel filters, channel count), and a text
tower is useless with the wrong vocabulary, so both are checked here rather than trusted.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, ClapConfig, ClapFeatureExtractor, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from .errors import ClapUnavailable, setting
from .laion_checkpoint import (
    LAION_FFT_SIZE,
    LAION_HOP_LENGTH,
    LAION_MAX_FREQUENCY,
    LAION_MIN_FREQUENCY,
    LAION_SAMPLE_RATE,
    laion_feature_extractor,
    truncation_for,
)
from .windows import SAMPLE_RATE, WINDOW_SAMPLES

log = logging.getLogger(__name__)

# the LAION music CLAP in Hugging Face form; `[clap] model`'s default is fetching.DEFAULT_MODEL
HF_MUSIC_MODEL = "laion/larger_clap_music"
# Every LAION CLAP text tower uses roberta-base's tokenizer; these hub ids all carry it.
TOKENIZER_CACHE_CANDIDATES = (HF_MUSIC_MODEL, "FacebookAI/roberta-base", "roberta-base")
LAION_MEL_BINS = 64
ROBERTA_SPECIAL_IDS = {"<s>": 0, "<pad>": 1, "</s>": 2}
ROBERTA_VOCAB_SIZE = 50_265
# A sample of roberta-base's vocab.json: another BPE vocabulary of its size puts them elsewhere.
ROBERTA_SAMPLE_IDS = {"<unk>": 3, ".": 4, "Ġthe": 5, ",": 6, "Ġto": 7, "Ġand": 8, "<mask>": 50_264}


def hf_feature_extractor(
    location: str, config: ClapConfig, options: dict[str, Any]
) -> ClapFeatureExtractor:
    """The model's saved feature extractor, checked against its audio tower (else laion's)."""
    audio = config.audio_config
    try:
        with quiet_transformers():
            extractor = ClapFeatureExtractor.from_pretrained(location, **options)
    except OSError:
        log.info("%s has no preprocessor_config.json: using laion-clap's front end", location)
        return laion_feature_extractor(audio.num_mel_bins, audio.enable_fusion)
    _require_laion_front_end(extractor, location)
    if extractor.feature_size != audio.num_mel_bins:
        raise ClapUnavailable(
            f"{location}: its feature extractor makes {extractor.feature_size} mel bins, its "
            f"model expects {audio.num_mel_bins}. Set {setting('model')} to a consistent model.",
            setting("model"),
        )
    if extractor.sampling_rate != SAMPLE_RATE or extractor.nb_max_samples != WINDOW_SAMPLES:
        raise ClapUnavailable(
            f"{location}: its feature extractor expects {extractor.sampling_rate} Hz clips of "
            f"{extractor.nb_max_samples} samples; this analyzer feeds 10-s clips at 48 kHz. "
            f"Set {setting('model')} to a 48 kHz CLAP model.",
            setting("model"),
        )
    truncation = truncation_for(audio.enable_fusion)
    if extractor.truncation != truncation:
        # The mode picks the mel filters and the channel count; it must follow the audio tower.
        log.info("%s: using truncation=%r to match the audio tower", location, truncation)
        extractor.truncation = truncation
    return extractor


def _require_laion_front_end(extractor: ClapFeatureExtractor, location: str) -> None:
    """Refuse a feature extractor whose mel front end is not the one HTSAT was trained on."""
    expected = {
        "sampling_rate": LAION_SAMPLE_RATE,
        "feature_size": LAION_MEL_BINS,
        "frequency_min": LAION_MIN_FREQUENCY,
        "frequency_max": LAION_MAX_FREQUENCY,
        "hop_length": LAION_HOP_LENGTH,
        "fft_window_size": LAION_FFT_SIZE,
    }
    wrong = {
        name: getattr(extractor, name, None)
        for name, value in expected.items()
        if getattr(extractor, name, None) != value
    }
    if wrong:
        shown = ", ".join(f"{name} {value} (not {expected[name]})" for name, value in wrong.items())
        raise ClapUnavailable(
            f"{location}: its preprocessor_config.json describes another audio front end than "
            f"the CLAP audio tower's: {shown}. Set {setting('model')} to a LAION CLAP model "
            f"with its own preprocessor_config.json, or remove that file to use laion-clap's.",
            setting("model"),
        )


def find_tokenizer(
    explicit: str | os.PathLike[str] | None,
    model_location: str | None,
    config: ClapConfig,
    options: dict[str, Any],
) -> PreTrainedTokenizerBase:
    """The explicit tokenizer dir, else the model's own, else a RoBERTa tokenizer in the cache."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        try:
            with quiet_transformers():
                found = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as error:
            found, problem = None, str(error)
        else:
            problem = "no vocabulary beyond its special tokens"
        if found is None or not _has_vocabulary(found):
            raise ClapUnavailable(
                f"no tokenizer in {path} ({problem}). Set {setting('tokenizer')} to a directory "
                f"holding a RoBERTa tokenizer (tokenizer.json, or vocab.json and merges.txt).",
                setting("tokenizer"),
            )
        return _checked_tokenizer(found, config, str(path))
    candidates = [model_location] if model_location else []
    candidates += [hub_id for hub_id in TOKENIZER_CACHE_CANDIDATES if hub_id != model_location]
    for candidate in candidates:
        try:
            with quiet_transformers():
                found = AutoTokenizer.from_pretrained(candidate, **options)
        except (OSError, ValueError):
            continue
        if _has_vocabulary(found):
            return _checked_tokenizer(found, config, candidate)
    raise ClapUnavailable(
        f"no RoBERTa tokenizer for the CLAP text tower: {model_location or 'the checkpoint'} "
        f"carries none and none of {', '.join(TOKENIZER_CACHE_CANDIDATES)} is in the Hugging "
        f"Face cache. Set {setting('tokenizer')} to a directory holding one (e.g. a copy of "
        f"{HF_MUSIC_MODEL}), or set {setting('allow_download')} = true.",
        setting("tokenizer"),
    )


def _has_vocabulary(found: PreTrainedTokenizerBase) -> bool:
    # transformers builds a tokenizer of special tokens only when a folder has no tokenizer files
    return len(found) > len(found.all_special_tokens)


def _checked_tokenizer(
    found: PreTrainedTokenizerBase, config: ClapConfig, where: str
) -> PreTrainedTokenizerBase:
    """Refuse a tokenizer that is not RoBERTa's: its ids would name other words to the tower."""
    special = {token: found.convert_tokens_to_ids(token) for token in ROBERTA_SPECIAL_IDS}
    if special != ROBERTA_SPECIAL_IDS:
        raise ClapUnavailable(
            f"the tokenizer from {where} numbers its special tokens {special}, RoBERTa's are "
            f"{ROBERTA_SPECIAL_IDS}. Set {setting('tokenizer')} to a RoBERTa (roberta-base) "
            f"tokenizer directory.",
            setting("tokenizer"),
        )
    if config.text_config.vocab_size == ROBERTA_VOCAB_SIZE:  # a real RoBERTa text tower
        sample = {token: found.convert_tokens_to_ids(token) for token in ROBERTA_SAMPLE_IDS}
        if len(found) != ROBERTA_VOCAB_SIZE or sample != ROBERTA_SAMPLE_IDS:
            raise ClapUnavailable(
                f"the tokenizer from {where} is not roberta-base's vocabulary ({len(found)} "
                f"tokens; {sample} where RoBERTa has {ROBERTA_SAMPLE_IDS}). Set "
                f"{setting('tokenizer')} to a roberta-base tokenizer directory.",
                setting("tokenizer"),
            )
    if len(found) > config.text_config.vocab_size:
        raise ClapUnavailable(
            f"the tokenizer from {where} has {len(found)} tokens, the text tower knows "
            f"{config.text_config.vocab_size}. Set {setting('tokenizer')} to the tokenizer this "
            f"model was trained with.",
            setting("tokenizer"),
        )
    return found


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars; our own errors say what matters."""
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
