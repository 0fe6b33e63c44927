"""Real encoded, tagged music files for tests: PyAV encodes a tone, mutagen writes the tags the
way taggers such as MusicBrainz Picard do."""

from __future__ import annotations

from pathlib import Path

import av
import mutagen
import numpy as np
from mutagen.id3 import ID3, TSRC, UFID
from mutagen.mp4 import MP4, MP4FreeForm

RATE = 44100
# container format, codec, extra codec options
ENCODERS = {
    ".mp3": ("mp3", "libmp3lame", {}),
    ".flac": ("flac", "flac", {}),
    ".ogg": ("ogg", "vorbis", {"strict": "experimental"}),
    ".m4a": ("ipod", "aac", {}),
}


def write_tagged(
    path: Path, tags: dict[str, str], seconds: float = 1.0, frequency: float = 440.0
) -> Path:
    """A stereo tone encoded by its suffix (.mp3, .flac, .ogg, .m4a), tagged with easy keys
    (title, artist, album, albumartist, tracknumber, discnumber, date, genre, isrc,
    musicbrainz_trackid)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    encode_tone(path, seconds, frequency)
    tags = dict(tags)
    raw = {key: tags.pop(key) for key in ("isrc", "musicbrainz_trackid") if key in tags}
    tagged = mutagen.File(path, easy=True)
    if tagged.tags is None:
        tagged.add_tags()
    for key, value in tags.items():
        tagged[key] = value
    tagged.save()
    _write_ids(path, raw)
    return path


def encode_tone(path: Path, seconds: float, frequency: float) -> None:
    container_format, codec, options = ENCODERS[path.suffix]
    samples = np.arange(int(seconds * RATE)) / RATE
    tone = (0.3 * np.sin(2 * np.pi * frequency * samples)).astype(np.float32)
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=RATE, layout="stereo", options=options)
        frame_size = stream.codec_context.frame_size or 1024
        fmt = stream.codec_context.format.name
        for start in range(0, len(tone), frame_size):
            chunk = tone[start : start + frame_size]
            planes = np.stack([chunk, chunk])
            if not fmt.endswith("p"):  # packed: interleave the two channels
                planes = planes.T.reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(_as_format(planes, fmt), format=fmt, layout="stereo")
            frame.sample_rate = RATE
            frame.pts = start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _as_format(planes: np.ndarray, fmt: str) -> np.ndarray:
    if fmt.startswith("s16"):
        return (planes * 32767).astype(np.int16)
    if fmt.startswith("s32"):
        return (planes * 2147483647).astype(np.int32)
    return planes.astype(np.float32)


def _write_ids(path: Path, ids: dict[str, str]) -> None:
    """ISRC and the MusicBrainz recording id, in each format's own frame or atom."""
    if not ids:
        return
    if path.suffix == ".mp3":
        id3 = ID3(path)
        if "isrc" in ids:
            id3.add(TSRC(encoding=3, text=[ids["isrc"]]))
        if "musicbrainz_trackid" in ids:
            id3.add(UFID(owner="http://musicbrainz.org", data=ids["musicbrainz_trackid"].encode()))
        id3.save()
    elif path.suffix == ".m4a":
        mp4 = MP4(path)
        names = {"isrc": "ISRC", "musicbrainz_trackid": "MusicBrainz Track Id"}
        for key, value in ids.items():
            mp4[f"----:com.apple.iTunes:{names[key]}"] = [MP4FreeForm(value.encode())]
        mp4.save()
    else:  # Vorbis comments: FLAC and Ogg
        tagged = mutagen.File(path)
        for key, value in ids.items():
            tagged[key.upper()] = [value]
        tagged.save()
