"""Turn an audio file into the log-mel patches musicnn was trained on, streaming.

Reproduces ``batch_data`` of musicnn 0.1.0's ``extractor.py`` (which used librosa): mono,
16 kHz, power mel spectrogram (n_fft 512, hop 256, 96 Slaney mels, centred frames), rounded to
float16, then ``log10(10000 * S + 1)``, cut into non-overlapping 187-frame (3 s) patches whose
remainder is dropped. Differences from the original, on purpose:

* resampling is soxr "HQ" (librosa >= 0.10's default ``soxr_hq``; the 2019 original used
  resampy ``kaiser_best``);
* frames are centred with *reflect* padding, librosa < 0.10's default and so what the
  model was trained with (librosa 0.10 switched the default to zeros);
* audio shorter than one patch (~2.98 s) is repeat-padded (the spectrogram is tiled), as the
  training configuration's ``pad_short: repeat-pad`` says; the original crashes on it;
* silent audio is not special: its patches are all zeros (log10(1)), and the network answers
  with its fixed response to silence.

Memory stays bounded for long files: decoding, resampling and framing run chunk by chunk
(decoding is the shared `soundspan_plugins.shared.track_audio`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np

from soundspan_plugins.shared.track_audio import TrackAudio

SAMPLE_RATE = 16000
FFT_SIZE = 512
HOP_LENGTH = 256
N_MELS = 96
PATCH_FRAMES = 187  # librosa.time_to_frames(3 s) + 1, as in the original extractor
MIN_STREAMING_SAMPLES = 4 * FFT_SIZE  # below this the whole signal is padded at once


# --- log-mel spectrogram ----------------------------------------------------------------------


@lru_cache(maxsize=1)
def mel_filterbank() -> np.ndarray:
    """librosa.filters.mel(sr=16000, n_fft=512, n_mels=96): Slaney scale and area norm, float32.

    The rounding steps (triangles stored as float32, then scaled in float64) follow librosa so
    the float16 cast downstream rounds the same way.
    """
    fft_frequencies = np.fft.rfftfreq(n=FFT_SIZE, d=1.0 / SAMPLE_RATE)
    mel_edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(SAMPLE_RATE / 2), N_MELS + 2))
    widths = np.diff(mel_edges)
    ramps = np.subtract.outer(mel_edges, fft_frequencies)
    weights = np.zeros((N_MELS, len(fft_frequencies)), dtype=np.float32)
    for band in range(N_MELS):
        rising = -ramps[band] / widths[band]
        falling = ramps[band + 2] / widths[band + 1]
        weights[band] = np.maximum(0, np.minimum(rising, falling))
    weights *= (2.0 / (mel_edges[2:] - mel_edges[:N_MELS]))[:, np.newaxis]
    return weights


_LINEAR_STEP_HZ = 200.0 / 3  # Slaney: linear below 1 kHz, logarithmic above
_LOG_START_HZ, _LOG_START_MEL = 1000.0, 15.0
_LOG_STEP = np.log(6.4) / 27.0


def _hz_to_mel(hz: float) -> float:
    if hz < _LOG_START_HZ:
        return hz / _LINEAR_STEP_HZ
    return _LOG_START_MEL + np.log(hz / _LOG_START_HZ) / _LOG_STEP


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    linear = _LINEAR_STEP_HZ * mels
    logarithmic = _LOG_START_HZ * np.exp(_LOG_STEP * (mels - _LOG_START_MEL))
    return np.where(mels >= _LOG_START_MEL, logarithmic, linear)


@lru_cache(maxsize=1)
def _hann_window() -> np.ndarray:
    """Periodic Hann (scipy.signal.get_window('hann', 512, fftbins=True)), float64 as librosa."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(FFT_SIZE) / FFT_SIZE)


def log_mel_of_frames(frames: np.ndarray) -> np.ndarray:
    """[k, 512] float32 signal frames -> [k, 96] float32 log-compressed mel frames.

    Follows librosa's dtypes (complex64 STFT, float32 power and mel) and then the original's
    float16 rounding. The mel product is summed in float64 so the result does not depend on
    how many frames BLAS sees at once (streaming equals one-shot, bit for bit). ``10000 * S``
    is taken in float32: numpy 1.x promoted float16 * int to float32, whereas numpy 2 keeps
    float16, which would overflow to inf above S = 6.55.
    """
    spectrum = np.fft.rfft(frames * _hann_window(), axis=-1).astype(np.complex64)
    power = np.abs(spectrum) ** 2
    mel = (power.astype(np.float64) @ mel_filterbank().T.astype(np.float64)).astype(np.float32)
    rounded = mel.astype(np.float16).astype(np.float32)
    return np.log10(np.float32(10000) * rounded + np.float32(1))


def log_mel_spectrogram(samples: np.ndarray) -> np.ndarray:
    """The whole-signal version: [n] float32 16 kHz samples -> [1 + n // 256, 96] log-mel."""
    padded = np.pad(np.asarray(samples, np.float32), FFT_SIZE // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, FFT_SIZE)[::HOP_LENGTH]
    return log_mel_of_frames(frames)


def stream_log_mel(chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Yield [k, 96] log-mel blocks of a chunked signal, equal to ``log_mel_spectrogram``.

    The centre padding mirrors the signal at both ends, so the first frames wait for enough
    samples and the last ones for the end of the stream.
    """
    half = FFT_SIZE // 2
    buffer = np.zeros(0, np.float32)
    before_buffer = np.zeros(1, np.float32)  # the sample just before buffer[0], for the end
    started = False
    for chunk in chunks:
        buffer = np.concatenate([buffer, chunk])
        if not started:
            if len(buffer) < MIN_STREAMING_SAMPLES:
                continue
            buffer = np.concatenate([buffer[1 : half + 1][::-1], buffer])
            started = True
        usable = (len(buffer) - FFT_SIZE) // HOP_LENGTH + 1
        if usable > 0:
            frames = np.lib.stride_tricks.sliding_window_view(buffer, FFT_SIZE)[::HOP_LENGTH]
            yield log_mel_of_frames(frames[:usable])
            before_buffer = buffer[usable * HOP_LENGTH - 1 : usable * HOP_LENGTH]
            buffer = buffer[usable * HOP_LENGTH :]
    if not started:  # short signal: pad all of it at once, exactly as librosa would
        if len(buffer):
            yield log_mel_spectrogram(buffer)
        return
    # The end mirror needs the last 257 samples; buffer holds at least 256 of them.
    tail = np.concatenate([before_buffer, buffer])[-half - 1 :]
    buffer = np.concatenate([buffer, tail[:-1][::-1]])
    frames = np.lib.stride_tricks.sliding_window_view(buffer, FFT_SIZE)[::HOP_LENGTH]
    if len(frames):
        yield log_mel_of_frames(frames)


# --- patches ----------------------------------------------------------------------------------


def stream_patches(mel_blocks: Iterable[np.ndarray], batch_size: int = 16) -> Iterator[np.ndarray]:
    """Group log-mel frames into non-overlapping [n <= batch_size, 187, 96] patch batches.

    Frames after the last full patch are dropped, as in the original. A signal shorter than one
    patch is tiled up to 187 frames and yields a single patch.
    """
    pending: list[np.ndarray] = []
    pending_frames = 0
    produced_any = False
    batch_frames = batch_size * PATCH_FRAMES
    for block in mel_blocks:
        pending.append(block)
        pending_frames += len(block)
        if pending_frames >= batch_frames:
            frames = np.concatenate(pending)
            usable = (len(frames) // batch_frames) * batch_frames
            for start in range(0, usable, batch_frames):
                yield frames[start : start + batch_frames].reshape(-1, PATCH_FRAMES, N_MELS)
            pending, pending_frames = [frames[usable:]], len(frames) - usable
            produced_any = True
    frames = np.concatenate(pending) if pending else np.zeros((0, N_MELS), np.float32)
    usable = (len(frames) // PATCH_FRAMES) * PATCH_FRAMES
    if usable:  # fewer than batch_size patches are left
        yield frames[:usable].reshape(-1, PATCH_FRAMES, N_MELS)
    elif not produced_any and len(frames):
        repeats = -(-PATCH_FRAMES // len(frames))
        yield np.tile(frames, (repeats, 1))[:PATCH_FRAMES][np.newaxis]


def patch_batches(audio: Iterable[np.ndarray], batch_size: int = 16) -> Iterator[np.ndarray]:
    """16 kHz mono chunks -> musicnn input patches in batches, [n, 187, 96] float32."""
    yield from stream_patches(stream_log_mel(audio), batch_size)


def iter_patch_batches(path: Path | str, batch_size: int = 16) -> Iterator[np.ndarray]:
    """Decode ``path`` (FFmpeg, else libsndfile) and yield its musicnn patches in batches."""
    yield from patch_batches(TrackAudio(path, SAMPLE_RATE), batch_size)


def read_patches(path: Path | str) -> np.ndarray:
    """All patches of ``path`` at once (fine for clips; long tracks should stream)."""
    return np.concatenate(list(iter_patch_batches(path, batch_size=64)))
