"""Whole-track audio embeddings and text embeddings from a loaded CLAP model.

Audio arrives decoded: 48 kHz mono float32, as one array or as an iterator of chunks. CLAP was
trained on 10-s clips, so a track is cut into consecutive 10-s windows, each embedded the way the
model expects a 10-s clip, and the unit-length window embeddings are averaged and re-normalised.

Long tracks are sampled, not embedded whole: while the audio streams past, every window is kept
until more than `max_windows` are; then every other kept window is dropped and from there on only
every 2nd window is kept, then every 4th, and so on. The result is at most `max_windows` windows
spaced evenly (every 2**k-th window, k as small as fits) across the whole track, chosen the same
way whether the audio comes as one array or in chunks, and without knowing the length ahead.
A final partial window is kept (repeat-padded, as CLAP pads short clips) when it is at least
MIN_TAIL_SECONDS long and falls on the current spacing, or when it is the whole track.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Sequence
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from .loading import LoadedClap
from .preprocessing import SAMPLE_RATE, WINDOW_SAMPLES, int16_round_trip

log = logging.getLogger(__name__)

WINDOW_SECONDS = WINDOW_SAMPLES // SAMPLE_RATE
DEFAULT_MAX_WINDOWS = 32
MIN_TAIL_SECONDS = 5
TEXT_MAX_TOKENS = 77  # the context length laion-clap trained its text tower with
_RECIPE_VERSION = 2  # bump when a change here would change stored embeddings

HALF_PRECISION_MIN_COSINE = 0.999  # below it, float16 embeddings are not float32's
PROBE_TEXTS = ("soft piano ballad", "aggressive metal with blast beats", "rain and thunder")

AudioInput = np.ndarray | Iterable[np.ndarray]


def embedding_recipe(max_windows: int = DEFAULT_MAX_WINDOWS) -> str:
    """A short string that changes whenever stored track embeddings would change."""
    return f"w{WINDOW_SECONDS}s-max{max_windows}-tail{MIN_TAIL_SECONDS}s-v{_RECIPE_VERSION}"


def select_windows(audio: AudioInput, max_windows: int = DEFAULT_MAX_WINDOWS) -> list[np.ndarray]:
    """The 10-s windows a track is embedded from: all of them, or an even sample of max_windows."""
    if max_windows < 1:
        raise ValueError(f"max_windows must be at least 1, not {max_windows}")
    sampler = _WindowSampler(max_windows)
    for chunk in [audio] if isinstance(audio, np.ndarray) else audio:
        sampler.feed(_mono_float32(chunk))
    return sampler.finish()


class _WindowSampler:
    """Cuts a stream into 10-s windows and keeps every `stride`-th, doubling stride when full."""

    def __init__(self, max_windows: int) -> None:
        self.max_windows = max_windows
        self.stride = 1
        self.kept: list[np.ndarray] = []
        self.index = 0  # of the window being filled
        self.pieces: list[np.ndarray] = []
        self.filled = 0

    def feed(self, chunk: np.ndarray) -> None:
        while chunk.size:
            take = min(WINDOW_SAMPLES - self.filled, chunk.size)
            if self._on_stride():
                self.pieces.append(chunk[:take].copy())  # a decoder may reuse its buffer
            self.filled += take
            chunk = chunk[take:]
            if self.filled == WINDOW_SAMPLES:
                self._close_window()

    def finish(self) -> list[np.ndarray]:
        whole_track = self.index == 0
        if self.filled and (whole_track or self.filled >= MIN_TAIL_SECONDS * SAMPLE_RATE):
            self._close_window()
        if not self.kept:
            raise ValueError("the track has no audio samples")
        return self.kept

    def _on_stride(self) -> bool:
        return self.index % self.stride == 0

    def _close_window(self) -> None:
        if self._on_stride():
            self.kept.append(np.concatenate(self.pieces))
            if len(self.kept) > self.max_windows:
                self.kept = self.kept[::2]
                self.stride *= 2
        self.pieces = []
        self.filled = 0
        self.index += 1


def _mono_float32(chunk: np.ndarray) -> np.ndarray:
    samples = np.asarray(chunk, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"expected mono samples (1-D), got shape {samples.shape}: downmix first")
    return samples


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
    return _unit(embed_windows(clap, windows, batch_size).mean(axis=0))


def embed_windows(
    clap: LoadedClap, windows: Sequence[np.ndarray], batch_size: int = 4
) -> np.ndarray:
    """Unit-length float32 [n, dim] embeddings of clips of at most 10 s each (48 kHz mono)."""
    model, extractor = clap.model, clap.feature_extractor
    if extractor is None or not hasattr(model, "audio_model"):
        raise ValueError("this CLAP model was loaded without its audio tower")
    for window in windows:
        if window.ndim != 1 or not 0 < window.size <= WINDOW_SAMPLES:
            raise ValueError(f"a clip must be 1-D with 1..{WINDOW_SAMPLES} samples: {window.shape}")
        if not np.isfinite(window).all():
            raise ValueError("a clip holds NaN or infinite samples")
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


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError("the window embeddings cancel out; no direction to normalise")
    return (vector / norm).astype(np.float32)


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
        clips = _probe_clips()
        cosines.append(np.sum(embed_windows(reference, clips) * embed_windows(candidate, clips), 1))
    if reference.tokenizer is not None:
        texts = list(PROBE_TEXTS)
        cosines.append(np.sum(embed_text(reference, texts) * embed_text(candidate, texts), 1))
    return float(np.concatenate(cosines).min())


def _probe_clips() -> list[np.ndarray]:
    """Three 10-s clips of the kinds a library holds: a chord with noise, loud noise, and a
    quiet tone (where float16 loses most)."""
    rng = np.random.default_rng(0)
    t = np.arange(WINDOW_SAMPLES) / SAMPLE_RATE
    chord = sum(0.2 * np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6))
    return [
        (chord + 0.02 * rng.standard_normal(t.size)).astype(np.float32),
        rng.uniform(-0.9, 0.9, t.size).astype(np.float32),
        (0.01 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32),
    ]


def _moved(clap: LoadedClap, model: torch.nn.Module, device: str, dtype: torch.dtype) -> LoadedClap:
    info = replace(clap.info, device=device, dtype=str(dtype).removeprefix("torch."))
    return LoadedClap(model, clap.feature_extractor, clap.tokenizer, info)
