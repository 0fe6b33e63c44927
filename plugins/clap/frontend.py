"""CLAP's mel front end in numpy, for workers that import neither torch nor transformers.

transformers' ClapFeatureExtractor is declared torch-only, so a torch-free worker computes the
same features itself: the int16 round trip, repeat-padding to 10 s, a centred (reflect-padded)
STFT with a periodic Hann window, the power spectrum through the model's mel filter bank, and
10 * log10 of it (floored at 1e-10), in the extractor's own dtypes (complex64 spectrum, float64
products). The filter bank is not rebuilt here: the host takes it from the extractor it checked
against the model (Slaney filters for unfused towers, HTK ones, on 4 stacked channels, for fused
ones) and stores it beside the exported graph, so both paths use one filter bank.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .windows import WINDOW_SAMPLES, int16_round_trip

MEL_FLOOR = 1e-10  # transformers' spectrogram(): mel_floor and power_to_db's min_value


@dataclass(frozen=True, eq=False)  # an array field: compared by identity
class MelFrontEnd:
    """A CLAP audio tower's input features: [n, channels, frames, mels] float32 per clip batch."""

    mel_filters: np.ndarray  # [fft_size // 2 + 1, mels] float64
    fft_size: int
    hop_length: int
    channels: int  # 4 for a fused tower (the same mel, stacked), else 1

    def __call__(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """Features of clips of at most 10 s (48 kHz mono), as the extractor makes them with
        truncation matched to the tower and padding="repeatpad"."""
        mels = np.stack([self.log_mel(_repeat_padded(int16_round_trip(clip))) for clip in clips])
        return np.repeat(mels[:, np.newaxis], self.channels, axis=1)

    def log_mel(self, samples: np.ndarray) -> np.ndarray:
        """[frames, mels] float32 log-mel of one 10-s clip."""
        half = self.fft_size // 2
        padded = np.pad(samples.astype(np.float64), half, mode="reflect")
        frames = np.lib.stride_tricks.sliding_window_view(padded, self.fft_size)[:: self.hop_length]
        spectrum = np.fft.rfft(frames * _periodic_hann(self.fft_size), axis=-1)
        power = np.abs(spectrum.astype(np.complex64), dtype=np.float64) ** 2
        mel = np.maximum(MEL_FLOOR, power @ self.mel_filters)
        return (10.0 * np.log10(mel)).astype(np.float32)


def _repeat_padded(samples: np.ndarray) -> np.ndarray:
    """laion-clap's "repeatpad": the clip repeated as often as it fits whole, then zeros."""
    repeated = np.tile(samples, WINDOW_SAMPLES // samples.size)
    return np.pad(repeated, (0, WINDOW_SAMPLES - repeated.size))


def _periodic_hann(size: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(size) / size)
