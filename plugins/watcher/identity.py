"""A music file's identity: a hash of its audio payload, so that a retag never changes it.

PyAV demuxes the file's audio packets without decoding them: every container keeps its
metadata (ID3v2, APE and ID3v1 tags, FLAC metadata blocks, Vorbis and Opus comment packets,
MP4 `moov` atoms, WAV LIST chunks) out of the packets, so hashing packet bytes skips tags by
construction. To stay cheap on a network share the hash takes the first packets up to a
byte budget and the last packets found after a seek near the end; a file that does not
demux (damaged, not audio) falls back to a hash of its sampled bytes, marked as such.
"""

from __future__ import annotations

import collections
import hashlib
import io
import logging
from pathlib import Path
from typing import BinaryIO

import av

log = logging.getLogger(__name__)

PAYLOAD_SCHEME = "pl1:"  # a hash of audio packets; changes only when the audio does
BYTES_SCHEME = "b2:"  # the fallback (and the identity of every file before the payload one)

HEAD_PAYLOAD_BYTES = 256 * 1024  # audio payload hashed from the start of the file
TAIL_PACKETS = 64  # packets hashed at the end of the file
TAIL_SEEKS_SECONDS = (10.0, 120.0)  # how far before the end to land; further if too few came
READ_BUDGET_BYTES = 64 * 1024 * 1024  # bytes one identity may read (tags with cover art too)

# MP3: seek by the Xing table of contents instead of reading every frame up to the target
DEMUXER_OPTIONS = {"usetoc": "1"}
TAGGED_EXTRADATA = {"vorbis", "speex"}  # codecs whose set-up data holds the comment header

SAMPLE_BYTES = 64 * 1024
SAMPLES = 4  # blocks hashed by the fallback: start, end, and evenly between


class ReadBudgetSpent(OSError):
    """A read went past its budget: the file is far bigger than it claims, or endless."""


class BoundedReader(io.RawIOBase):
    """A file that refuses to read more than `budget` bytes in all, so that no reader
    (mutagen, PyAV) can be walked through a file without end."""

    def __init__(self, file: BinaryIO, name: str, budget: int) -> None:
        self.file = file
        self.name = name  # mutagen and PyAV guess the format from the name, too
        self.left = budget

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.file.seek(offset, whence)

    def tell(self) -> int:
        return self.file.tell()

    def readinto(self, buffer) -> int:
        if self.left <= 0:
            raise ReadBudgetSpent(f"{self.name}: read more than its budget")
        view = memoryview(buffer)[: self.left]
        count = self.file.readinto(view)
        self.left -= count or 0
        return count


def bytes_fingerprint(file: BinaryIO, size: int) -> str:
    """The identity every file had before the payload one: its size and sampled blocks,
    tags included. Kept to find contents recorded that way, and for files PyAV can't read."""
    digest = hashlib.blake2b(str(size).encode(), digest_size=16)
    if size <= SAMPLE_BYTES * SAMPLES:
        file.seek(0)
        digest.update(file.read(size))
    else:
        step = (size - SAMPLE_BYTES) // (SAMPLES - 1)
        for index in range(SAMPLES):
            file.seek(index * step)
            digest.update(file.read(SAMPLE_BYTES))
    return BYTES_SCHEME + digest.hexdigest()


def payload_identity(file: BinaryIO, name: str) -> str | None:
    """A hash of the first and last audio packets; None if the file does not demux as audio."""
    file.seek(0)
    reader = BoundedReader(file, name, READ_BUDGET_BYTES)
    try:
        with av.open(reader, "r", options=DEMUXER_OPTIONS) as container:
            if not container.streams.audio:
                return None
            return _hash_packets(container, container.streams.audio[0])
    except (av.FFmpegError, OSError, ValueError, EOFError) as error:
        log.debug("%s: no audio payload (%s); hashing its bytes", name, error)
        return None


def _hash_packets(container: av.container.InputContainer, stream: av.audio.AudioStream) -> str:
    codec = stream.codec_context
    digest = hashlib.blake2b(
        f"{codec.name}:{codec.sample_rate}:{codec.channels}".encode(), digest_size=16
    )
    if codec.name not in TAGGED_EXTRADATA and codec.extradata:
        digest.update(codec.extradata)  # e.g. FLAC's STREAMINFO, with the MD5 of all its audio
    hashed = 0
    for packet in container.demux(stream):
        if packet.size == 0:
            continue  # the demuxer's flush packet
        digest.update(memoryview(packet))
        hashed += packet.size
        if hashed >= HEAD_PAYLOAD_BYTES:
            break
    else:
        return PAYLOAD_SCHEME + digest.hexdigest()  # all of it hashed
    digest.update(b"\0tail\0")
    for packet in _tail(container, stream):
        digest.update(packet)
    return PAYLOAD_SCHEME + digest.hexdigest()


def _tail(container: av.container.InputContainer, stream: av.audio.AudioStream) -> list[bytes]:
    """The last TAIL_PACKETS packets. Where a seek lands may depend on the tags' size (the
    demuxer estimates from the file's size), so land well before the end and keep the last."""
    end = _end_in_stream_units(container, stream)
    last: collections.deque[bytes] = collections.deque(maxlen=TAIL_PACKETS)
    for seconds_before in TAIL_SEEKS_SECONDS:
        target = max(end - int(seconds_before / stream.time_base), 0) if end else 0
        container.seek(target, stream=stream, backward=True, any_frame=False)
        last.clear()
        landed = 0
        for packet in container.demux(stream):
            if packet.size:
                last.append(bytes(packet))
                landed += 1
        if landed > TAIL_PACKETS or target == 0:
            break
    return list(last)


def _end_in_stream_units(
    container: av.container.InputContainer, stream: av.audio.AudioStream
) -> int | None:
    if stream.duration is not None:
        return (stream.start_time or 0) + stream.duration
    if container.duration is not None:  # in AV_TIME_BASE (microseconds)
        return int(container.duration / 1_000_000 / stream.time_base)
    return None


def identity(path: Path, file: BinaryIO, size: int) -> tuple[str, str]:
    """(the file's identity, its bytes fingerprint): the payload hash where PyAV can read the
    audio, else the bytes fingerprint for both."""
    legacy = bytes_fingerprint(file, size)
    return payload_identity(file, str(path)) or legacy, legacy
