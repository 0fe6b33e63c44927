"""Whole-track audio embeddings and text embeddings from a CLAP model loaded in torch.

A track is embedded from its 10-s windows (windows.py chooses them): each window is embedded the
way the model expects a 10-s clip, and the unit-length window embeddings are averaged and
re-normalised. This is the torch path: the host's text tower, the export's reference, and the
audio tower on CUDA; CPU workers run the same tower exported to ONNX (inference.py).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from .loading import LoadedClap
from .windows import (
    DEFAULT_MAX_WINDOWS,
    SAMPLE_RATE,
    AudioInput,
    check_clips,
    int16_round_trip,
    probe_clips,
    select_windows,
    unit,
)

log = logging.getLogger(__name__)

TEXT_MAX_TOKENS = 77  # the context length laion-clap trained its text tower with

HALF_PRECISION_MIN_COSINE = 0.999  # below it, float16 embeddings are not float32's
PROBE_TEXTS = ("soft piano ballad", "aggressive metal with blast beats", "rain and thunder")


def embed_track(
    clap: LoadedClap,
    audio: AudioInput,
    *,
    max_windows: int = DEFAULT_MAX_WINDOWS,
    batch_size: int = 4,
) -> np.ndarray:
    """One unit-length float32 [dim] embedding for a whole 48 kHz mono track.

    batch_size bounds memory: with larger_clap_music's audio tower on CPU, a process peaks near
    0.9 GB at 4 windows a batch and 1.1 GB at 8; past 2, bigger batches barely save time.
    """
    return embed_selected(clap, select_windows(audio, max_windows), batch_size)


def embed_selected(
    clap: LoadedClap, windows: Sequence[np.ndarray], batch_size: int = 4
) -> np.ndarray:
    """The unit-length mean of these windows' embeddings: a track's embedding."""
    return unit(embed_windows(clap, windows, batch_size).mean(axis=0))


def embed_windows(
    clap: LoadedClap, windows: Sequence[np.ndarray], batch_size: int = 4
) -> np.ndarray:
    """Unit-length float32 [n, dim] embeddings of clips of at most 10 s each (48 kHz mono)."""
    model, extractor = clap.model, clap.feature_extractor
    if extractor is None or not hasattr(model, "audio_model"):
        raise ValueError("this CLAP model was loaded without its audio tower")
    check_clips(windows)
    device, dtype = _placement(model)
    batches = []
    for start in range(0, len(windows), batch_size):
        batch = [int16_round_trip(window) for window in windows[start : start + batch_size]]
        features = extractor(
            batch,
            sampling_rate=SAMPLE_RATE,
            truncation=extractor.truncation,
            padding="repeatpad",
            return_tensors="pt",
        )
        # No clip is longer than 10 s. The extractor would still mark one clip of the batch
        # "longer" at random (a training trick of the original); a fused model would then run
        # its fusion branch on it, making the result depend on the batch. False for all matches
        # the original's inference on clips of 10 s or less.
        is_longer = torch.zeros((len(batch), 1), dtype=torch.bool, device=device)
        with torch.inference_mode():
            pooled = model.audio_model(
                input_features=features["input_features"].to(device=device, dtype=dtype),
                is_longer=is_longer,
            ).pooler_output
            batches.append(F.normalize(model.audio_projection(pooled).float(), dim=-1).cpu())
    if not batches:
        raise ValueError("no clips to embed")
    return torch.cat(batches).numpy().astype(np.float32, copy=False)


def embed_text(clap: LoadedClap, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
    """Unit-length float32 [n, dim] embeddings of text queries, in the tracks' vector space."""
    model, tokenizer = clap.model, clap.tokenizer
    if tokenizer is None or not hasattr(model, "text_model"):
        raise ValueError("this CLAP model was loaded without its text tower")
    if isinstance(texts, str):
        raise TypeError("embed_text takes a sequence of strings; wrap a single query in a list")
    device, _ = _placement(model)
    # RoBERTa positions start after the padding index, hence the 2 spare positions.
    max_tokens = min(TEXT_MAX_TOKENS, model.text_model.config.max_position_embeddings - 2)
    batches = [torch.empty((0, clap.info.embedding_dim))]
    for start in range(0, len(texts), batch_size):
        tokens = tokenizer(
            list(texts[start : start + batch_size]),
            padding=True,
            truncation=True,
            max_length=max_tokens,
            return_tensors="pt",
        )
        with torch.inference_mode():
            pooled = model.text_model(
                input_ids=tokens["input_ids"].to(device),
                attention_mask=tokens["attention_mask"].to(device),
            ).pooler_output
            batches.append(F.normalize(model.text_projection(pooled).float(), dim=-1).cpu())
    return torch.cat(batches).numpy().astype(np.float32, copy=False)


def _placement(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    parameter = next(model.parameters())
    return parameter.device, parameter.dtype


def placed(
    clap: LoadedClap,
    device: str,
    dtype: torch.dtype = torch.float16,
    min_cosine: float = HALF_PRECISION_MIN_COSINE,
) -> LoadedClap:
    """The model on `device` in `dtype` (half precision halves GPU memory and uses tensor
    cores) if its embeddings of a few probe clips and phrases agree with float32's there
    (cosine >= min_cosine); else in float32, logged."""
    full = _moved(clap, clap.model.to(device=device, dtype=torch.float32), device, torch.float32)
    lowered = _moved(full, copy.deepcopy(full.model).to(dtype=dtype), device, dtype)
    cosine = embedding_agreement(full, lowered)
    if cosine >= min_cosine:
        del full
        return lowered
    log.warning(
        "CLAP on %s: %s embeddings differ from float32 ones (cosine %.4f < %g); running in float32",
        device,
        lowered.info.dtype,
        cosine,
        min_cosine,
    )
    return full


def embedding_agreement(reference: LoadedClap, candidate: LoadedClap) -> float:
    """The lowest cosine between the two models' embeddings of the same probe clips and phrases."""
    cosines = []
    if reference.feature_extractor is not None:
        clips = probe_clips()
        cosines.append(np.sum(embed_windows(reference, clips) * embed_windows(candidate, clips), 1))
    if reference.tokenizer is not None:
        texts = list(PROBE_TEXTS)
        cosines.append(np.sum(embed_text(reference, texts) * embed_text(candidate, texts), 1))
    return float(np.concatenate(cosines).min())


def _moved(clap: LoadedClap, model: torch.nn.Module, device: str, dtype: torch.dtype) -> LoadedClap:
    info = replace(clap.info, device=device, dtype=str(dtype).removeprefix("torch."))
    return LoadedClap(model, clap.feature_extractor, clap.tokenizer, info)
