"""Real, freely licensed music for the benchmarks: the soundtracks Debian ships in packages.

`drascula-music` (the Drascula adventure's score), `fillets-ng-data` (Fish Fillets' music) and
`hyperrogue-music` (HyperRogue's) are Ogg Vorbis soundtracks under free licences. Three of
HyperRogue's tracks are files FFmpeg refuses (their Vorbis headers are written twice before the
audio) that libvorbis plays: the analyzers read them with libsndfile. The benchmarks fetch the
packages with `apt-get download` (no root needed, nothing installed) into a cache folder and
unpack them with `dpkg-deb -x`, so every run measures the same real, encoded files. Each package
is one album by one composer, which gives the quality checks a "same album" label.

    .venv/bin/python bench/real_music.py [--cache DIR]   # fetch, then list the tracks
    .venv/bin/python bench/real_music.py --decoders      # ... and which decoder reads each
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import mutagen
import numpy as np

from soundspan_plugins.shared.audio import UnreadableAudio
from soundspan_plugins.shared.track_audio import TrackAudio

DEFAULT_CACHE = Path.home() / ".cache" / "soundspan-bench" / "debian-music"
# package -> the folder inside it that holds its music (other folders hold speech and effects)
ALBUMS = {
    "drascula-music": "usr/share/scummvm/drascula/audio",
    "fillets-ng-data": "usr/share/games/fillets-ng/music",
    "hyperrogue-music": "usr/share/hyperrogue/music",
}
MIN_SECONDS = 30.0  # jingles are not what a library is made of


@dataclass(frozen=True)
class RealTrack:
    path: Path
    album: str  # the Debian package: one soundtrack, one composer
    seconds: float


def debian_music(cache: Path = DEFAULT_CACHE) -> list[RealTrack]:
    """Every track of at least MIN_SECONDS in the packages, fetched into `cache` on first use."""
    tracks = []
    for package, folder in ALBUMS.items():
        unpacked = cache / package
        if not unpacked.is_dir():
            _fetch(package, unpacked)
        for path in sorted((unpacked / folder).glob("*.ogg")):
            seconds = _duration(path)
            if seconds >= MIN_SECONDS:
                tracks.append(RealTrack(path, package, seconds))
    return tracks


def same_album_at_k(embeddings: np.ndarray, albums: list[str], k: int = 5) -> float:
    """Mean fraction of each track's k nearest neighbours (cosine, itself excluded) that come
    from its own album: how well an embedding keeps a soundtrack's tracks together."""
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    labels = np.array(albums)
    nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return float((labels[nearest] == labels[:, np.newaxis]).mean())


def _fetch(package: str, destination: Path) -> None:
    if not shutil.which("apt-get"):
        raise SystemExit(f"the real-music benchmarks need apt-get to fetch {package}")
    with tempfile.TemporaryDirectory() as download:
        subprocess.run(
            ["apt-get", "download", "-q", package], cwd=download, check=True, capture_output=True
        )
        [deb] = Path(download).glob("*.deb")
        partial = destination.with_name(destination.name + ".partial")
        partial.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(partial, ignore_errors=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(partial)], check=True)
        partial.rename(destination)


def _duration(path: Path) -> float:
    """The length the file's headers give (mutagen reads the files FFmpeg refuses, too)."""
    return mutagen.File(path).info.length


def decoder_of(track: RealTrack, sample_rate: int = 16000) -> str:
    """Which decoder the analyzers read the track with (UnreadableAudio if none can)."""
    audio = TrackAudio(track.path, sample_rate)
    for _ in audio:
        pass
    return audio.decoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument(
        "--decoders", action="store_true", help="decode every track; count each decoder's"
    )
    args = parser.parse_args()
    tracks = debian_music(args.cache)
    decoders: Counter[tuple[str, str]] = Counter()
    for track in tracks:
        try:
            decoder = decoder_of(track) if args.decoders else ""
        except UnreadableAudio as error:
            decoder = f"failed ({error.reason})"
        decoders[(track.album, decoder)] += 1
        print(f"{track.album:<16} {track.seconds:7.1f} s  {decoder:<10} {track.path}")
    minutes = sum(track.seconds for track in tracks) / 60
    print(f"{len(tracks)} tracks, {minutes:.1f} minutes")
    if args.decoders:
        for (album, decoder), count in sorted(decoders.items()):
            print(f"{album:<16} {decoder:<10} {count}")


if __name__ == "__main__":
    main()
