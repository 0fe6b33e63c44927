"""Decoding any audio file to mono float32 at a chosen rate, streaming, for the analyzers.

FFmpeg (PyAV) decodes, soxr resamples; nothing is hand-written. A file is read chunk by chunk,
so a 3-hour mix never sits in memory whole. Every way a file's content can be unusable (empty,
not audio, damaged, truncated) becomes one UnreadableAudio with a reason a user can act on;
where the trouble may be FFmpeg's rather than the file's, it is a DecoderRefused, and
`track_audio` asks libsndfile instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from stat import S_ISREG

import av
import numpy as np
import soxr

DECODE_CHUNK_SAMPLES = 1 << 16  # resample in blocks of ~1.5 s of source audio
TRUNCATION_TOLERANCE_S = 1.0
MAX_DAMAGED_FRACTION = 0.01  # plus two: a cut-off last packet is normal when truncated


class UnreadableAudio(Exception):
    """An audio file could not be decoded into sound the analyzer can use."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"Cannot analyse {path}: {reason}")
        self.path = Path(path)
        self.reason = reason

    def __reduce__(self):
        # raised in analyzer worker processes: it must cross back to the host intact
        return type(self), (self.path, self.reason)


class DecoderRefused(UnreadableAudio):
    """One decoder could not read the file (not its format, a header it rejects): another may."""


def check_regular_file(path: Path) -> None:
    """Refuse what no decoder should open: FIFOs, devices and folders (they never end), and
    empty files. A missing or unreadable file raises its OSError, so the queue retries it."""
    status = path.stat()
    if not S_ISREG(status.st_mode):
        raise UnreadableAudio(path, "it is not a regular file.")
    if status.st_size == 0:
        raise UnreadableAudio(path, "the file is empty (0 bytes).")


def decode_mono(path: Path | str, sample_rate: int) -> Iterator[np.ndarray]:
    """Yield the file's audio as float32 mono chunks at `sample_rate` (channel mean, soxr HQ).

    A few undecodable packets are skipped, as FFmpeg's command line does. Raises
    ``UnreadableAudio`` for files that are not regular files, empty, badly damaged, or that end
    well before their declared duration (truncated or still copying), and ``DecoderRefused``
    for files FFmpeg cannot read or finds no samples in; a missing or unreadable file raises
    its OSError.
    """
    path = Path(path)
    container = _open_audio(path)
    with container:
        stream = container.streams.audio[0]
        declared_seconds = _declared_duration(path, container, stream)
        resampler: MonoResampler | None = None
        pending: list[np.ndarray] = []
        pending_samples = good_packets = damaged_packets = 0
        damaged_seconds = 0.0
        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:
                    damaged_packets += 1
                    if packet.duration and packet.time_base:
                        damaged_seconds += float(packet.duration * packet.time_base)
                    continue
                good_packets += 1
                for frame in frames:
                    planes = _float_planes(frame)  # [channels, samples] float32
                    if resampler is None:
                        resampler = MonoResampler(frame.sample_rate, sample_rate)
                    pending.append(planes.mean(axis=0, dtype=np.float32))
                    pending_samples += planes.shape[1]
                if pending_samples >= DECODE_CHUNK_SAMPLES:
                    out = resampler.push(np.concatenate(pending))
                    pending, pending_samples = [], 0
                    if len(out):
                        yield out
        except OSError:
            raise  # an I/O error may pass: the queue retries
        except (av.error.FFmpegError, ValueError) as error:
            raise DecoderRefused(path, f"reading the file failed ({error}).") from error
        if damaged_packets > MAX_DAMAGED_FRACTION * (good_packets + damaged_packets) + 2:
            raise UnreadableAudio(
                path,
                f"{damaged_packets} of {good_packets + damaged_packets} audio packets are "
                "damaged and cannot be decoded.",
            )
        if resampler is None or resampler.source_samples + pending_samples == 0:
            raise DecoderRefused(path, "the file contains no audio samples.")
        last = np.concatenate(pending) if pending else np.zeros(0, np.float32)
        decoded_seconds = (resampler.source_samples + len(last)) / resampler.source_rate
        if declared_seconds and (
            decoded_seconds + damaged_seconds < declared_seconds - TRUNCATION_TOLERANCE_S
        ):
            raise UnreadableAudio(
                path,
                f"it ends after {decoded_seconds:.1f} s although it declares "
                f"{declared_seconds:.1f} s; it is truncated or still being written.",
            )
        out = resampler.push(last, last=True)
        if len(out):
            yield out


def _open_audio(path: Path) -> av.container.InputContainer:
    """Open ``path`` with FFmpeg, turning every way the content fails into one readable reason.

    Trouble that may pass (the file moved away, a permission or I/O error on a flaky mount)
    is raised as the OSError it is, so the queue retries the job instead of failing it.
    """
    check_regular_file(path)
    try:
        container = av.open(str(path))
    except OSError:
        raise  # PyAV's own errors for these are OSErrors too
    except (av.error.FFmpegError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise DecoderRefused(
            path, f"it is not an audio file FFmpeg can read ({reason})."
        ) from error
    if not container.streams.audio:
        container.close()
        raise DecoderRefused(path, "the file has no audio stream.")
    return container


def _float_planes(frame: av.AudioFrame) -> np.ndarray:
    """[channels, samples] float32, scaled as libsndfile/librosa do (int16 / 32768, ...)."""
    samples = frame.to_ndarray()
    if not frame.format.is_planar:
        samples = samples.reshape(-1, len(frame.layout.channels)).T
    if samples.dtype.kind in "iu":
        if samples.dtype.kind == "u":  # only u8 exists: offset binary around 128
            return (samples.astype(np.float32) - 128) / np.float32(128)
        return samples.astype(np.float32) / np.float32(2 ** (8 * samples.dtype.itemsize - 1))
    return samples.astype(np.float32, copy=False)


class MonoResampler:
    """soxr HQ from the source rate to the target, chunk by chunk, length fixed as librosa does.

    librosa.load skips resampling for 16 kHz sources and otherwise fixes the output length to
    ceil(n * ratio); the streaming resampler can end a few samples off that.
    """

    def __init__(self, source_rate: int, target_rate: int) -> None:
        self.source_rate = source_rate
        self.target_rate = target_rate
        self.source_samples = 0
        self.emitted = 0
        self._stream = None
        if source_rate != target_rate:
            self._stream = soxr.ResampleStream(
                source_rate, target_rate, 1, dtype="float32", quality="HQ"
            )

    def push(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        self.source_samples += len(samples)
        out = samples if self._stream is None else self._stream.resample_chunk(samples, last)
        if last:
            expected = int(np.ceil(self.source_samples * self.target_rate / self.source_rate))
            out = out[: max(expected - self.emitted, 0)]
            shortfall = expected - self.emitted - len(out)
            if shortfall > 0:
                out = np.concatenate([out, np.zeros(shortfall, np.float32)])
        self.emitted += len(out)
        return out


# Containers whose duration comes from a header or index, not from a bitrate guess.
HEADER_DURATION_FORMATS = frozenset(
    {"flac", "wav", "w64", "aiff", "caf", "wv", "ape", "tta", "ogg", "matroska,webm",
     "mov,mp4,m4a,3gp,3g2,mj2"}
)  # fmt: skip
MP3_LENGTH_TAGS = (b"Xing", b"Info", b"VBRI")


def _declared_duration(path: Path, container: av.container.InputContainer, stream) -> float | None:
    """The duration the file claims, when the claim can be trusted to detect truncation.

    FFmpeg guesses an MP3's duration from its first frame's bitrate unless a Xing/Info/VBRI
    header gives the frame count; the guess can be several times off for VBR files.
    """
    if container.format.name == "mp3":
        if not _has_mp3_length_header(path):
            return None
    elif container.format.name not in HEADER_DURATION_FORMATS:
        return None
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _has_mp3_length_header(path: Path) -> bool:
    with path.open("rb") as handle:
        start = handle.read(10)
        offset = 0
        if start[:3] == b"ID3" and len(start) == 10:  # skip the ID3v2 tag (syncsafe size)
            offset = 10 + sum((byte & 0x7F) << (7 * (3 - i)) for i, byte in enumerate(start[6:]))
            offset += 10 if start[5] & 0x10 else 0  # ID3v2.4 footer
        handle.seek(offset)
        first_frame = handle.read(200)
    return any(tag in first_frame for tag in MP3_LENGTH_TAGS)
