"""Make the musicnn parity fixture: real music clips and the ORIGINAL TensorFlow musicnn's output.

Our ONNX port (plugins/musicnn) is tested against ``tests/fixtures/musicnn/reference.json``,
which this script writes by running musicnn 0.1.0's own ``extractor.py``/``models.py``. It is a
development tool, never imported by the project. How the committed fixture was made:

1. Clips. The audio is two instrumental tracks by Anttis that ship in the ``arcade`` wheel
   (``arcade/resources/assets/music/{1918,funkyrobot}.mp3``; released free to use by the
   author, see that folder's readme.txt). Nothing is downloaded from the web::

       pip download --no-deps arcade==3.3.3 -d /tmp/dl && cd /tmp/dl && \\
           unzip -o -q arcade-3.3.3-py3-none-any.whl 'arcade/resources/assets/music/*'
       python bench/musicnn_reference.py clips /tmp/dl/arcade/resources/assets/music

   (any Python with ``av`` installed). It cuts three short excerpts in three codecs, so both
   sides decode the very same bytes: a 44.1 kHz stereo MP3, a 16 kHz mono FLAC (no resampling
   and lossless, so the front ends should agree almost bit for bit) and a 48 kHz Ogg Opus.

2. Reference, in a throwaway venv (TF 2.15 is the last release whose bundled Keras 2 still
   provides ``tf.compat.v1.layers``; it runs on Python 3.11)::

       python3.11 -m venv /tmp/tfref
       /tmp/tfref/bin/pip install tensorflow-cpu==2.15.1 librosa==0.10.2.post1 "numpy<2" av soxr
       /tmp/tfref/bin/pip install --no-deps musicnn==0.1.0
       PYTHONPATH=/tmp/mscratch /tmp/tfref/bin/python bench/musicnn_reference.py reference

   where /tmp/mscratch holds a symlink ``soundspan_plugins -> <repo>/plugins`` (used only for
   the second record below). For every clip and for MSD_musicnn and MTT_musicnn it records:

   * ``original``: musicnn's ``extractor(file, model, input_length=3, input_overlap=False,
     extract_features=True)`` exactly as shipped, with one shim: librosa 0.10 changed the
     STFT's default ``pad_mode`` from ``"reflect"`` to ``"constant"``, so the shim puts back
     the ``"reflect"`` that librosa 0.6/0.7 (what the model was trained and released with)
     used. librosa.load resamples with soxr_hq (librosa 0.10's default) and decodes with
     libsndfile, where our front end decodes with FFmpeg.
   * ``tf_on_our_patches``: the same TF graph and checkpoint fed the patches OUR front end
     (``soundspan_plugins.musicnn.frontend``) makes, which isolates network parity from
     front-end parity.

   Each record holds the number of patches, the per-patch taggram (all 50 tags), its mean
   over patches and the top-5 tags of that mean, and the penultimate embedding (200-d,
   ``features['penultimate']``) of the first patch. Only ``tf_on_our_patches`` has the mean
   embedding over patches: the original extractor's batch loop binds the penultimate layer to
   ``backend_`` but concatenates ``penultimate_``, so its rows after the first all repeat
   patch 1 (the same bug hits ``cnn1``..``cnn3``; the taggram is unaffected).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "musicnn"
MODELS = ("MSD_musicnn", "MTT_musicnn")

# (output name, source track, start s, length s, codec, container, sample rate, channels, kbps)
CLIPS = (
    ("anttis_1918.mp3", "1918.mp3", 60.0, 25.0, "libmp3lame", "mp3", 44100, 2, 128),
    ("anttis_funkyrobot_16k.flac", "funkyrobot.mp3", 60.0, 25.0, "flac", "flac", 16000, 1, 0),
    ("anttis_funkyrobot.opus", "funkyrobot.mp3", 140.0, 20.0, "libopus", "ogg", 48000, 2, 96),
)


def make_clips(music_dir: Path) -> None:
    """Cut and re-encode the excerpts into the fixture folder (FFmpeg via PyAV)."""
    import av

    FIXTURES.mkdir(parents=True, exist_ok=True)
    for name, source, start, length, codec, fmt, rate, channels, kbps in CLIPS:
        layout = "stereo" if channels == 2 else "mono"
        sample_format = {"libmp3lame": "fltp", "flac": "s16", "libopus": "flt"}[codec]
        resampler = av.AudioResampler(format=sample_format, layout=layout, rate=rate)
        with av.open(str(music_dir / source)) as src:
            pieces = [
                converted.to_ndarray()
                for frame in src.decode(audio=0)
                for converted in resampler.resample(frame)
            ]
        planar = sample_format.endswith("p")
        audio = np.concatenate(pieces, axis=1)
        if not planar:  # packed: [1, samples * channels] -> [channels, samples]
            audio = audio.reshape(-1, channels).T
        audio = audio[:, int(start * rate) : int((start + length) * rate)]
        with av.open(str(FIXTURES / name), "w", format=fmt) as dst:
            stream = dst.add_stream(codec, rate=rate, layout=layout)
            if kbps:
                stream.bit_rate = kbps * 1000
            for offset in range(0, audio.shape[1], 4096):
                block = audio[:, offset : offset + 4096]
                if not planar:
                    block = block.T.reshape(1, -1)
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(block), format=sample_format, layout=layout
                )
                frame.sample_rate = rate
                for packet in stream.encode(frame):
                    dst.mux(packet)
            for packet in stream.encode(None):
                dst.mux(packet)
        print(name, (FIXTURES / name).stat().st_size, "bytes")


def _rounded(values) -> list[float]:
    """float32 values need 8 significant digits, not Python's 17."""
    return [float(f"{value:.8g}") for value in values]


def _summary(taggram: np.ndarray, embeddings: np.ndarray, tags: list[str]) -> dict:
    mean_taggram = taggram.mean(axis=0)
    top5 = [tags[i] for i in np.argsort(-mean_taggram, kind="stable")[:5]]
    return {
        "n_patches": int(taggram.shape[0]),
        "top5": top5,
        "mean_taggram": _rounded(mean_taggram),
        "taggram": [_rounded(row) for row in taggram],
        "first_patch_embedding": _rounded(embeddings[0]),
        "mean_embedding": _rounded(embeddings.mean(axis=0)),
    }


def make_reference() -> None:
    """Run the original musicnn (TensorFlow) on every clip; needs the venv described above."""
    import librosa
    import tensorflow as tf
    from musicnn import extractor as original

    original_melspectrogram = librosa.feature.melspectrogram

    def melspectrogram_as_in_2019(*args, **kwargs):
        kwargs.setdefault("pad_mode", "reflect")
        return original_melspectrogram(*args, **kwargs)

    original.librosa.feature.melspectrogram = melspectrogram_as_in_2019

    from soundspan_plugins.musicnn.frontend import read_patches

    reference: dict = {
        "generator": "bench/musicnn_reference.py",
        "versions": {
            "tensorflow": tf.__version__,
            "librosa": librosa.__version__,
            "numpy": np.__version__,
            "musicnn": "0.1.0",
        },
        # Lets the tests prove our numpy filterbank is bit-identical without librosa.
        "librosa_mel_filterbank_sha256": hashlib.sha256(
            librosa.filters.mel(sr=16000, n_fft=512, n_mels=96).tobytes()
        ).hexdigest(),
        "clips": {},
    }
    for name, *_ in CLIPS:
        clip = FIXTURES / name
        our_patches = read_patches(clip)
        per_model = {}
        for model in MODELS:
            taggram, tags, features = original.extractor(
                str(clip), model=model, input_length=3, input_overlap=False, extract_features=True
            )
            original_summary = _summary(taggram, features["penultimate"], tags)
            # extractor.py's batch loop unpacks the penultimate layer into `backend_` but
            # concatenates `penultimate_`, so every row after the first repeats patch 1:
            # only the first row is the real embedding.
            del original_summary["mean_embedding"]
            record = {"original": original_summary}
            tf_taggram, tf_embedding = _run_tf_graph(model, our_patches)
            record["tf_on_our_patches"] = _summary(tf_taggram, tf_embedding, tags)
            per_model[model] = record
        reference["clips"][name] = per_model
        print(name, {m: r["original"]["top5"] for m, r in per_model.items()}, file=sys.stderr)
    out = FIXTURES / "reference.json"
    out.write_text(json.dumps(reference, indent=1) + "\n")
    print("wrote", out)


def _run_tf_graph(model: str, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The extractor's graph and checkpoint, fed our patches one at a time like the original."""
    import os

    import tensorflow as tf
    from musicnn import models

    tf.compat.v1.reset_default_graph()
    with tf.name_scope("model"):
        x = tf.compat.v1.placeholder(tf.float32, [None, 187, 96])
        is_training = tf.compat.v1.placeholder(tf.bool)
        logits, *_features, penultimate = models.define_model(x, is_training, model, 50)
        probabilities = tf.nn.sigmoid(logits)
    with tf.compat.v1.Session() as session:
        tf.compat.v1.train.Saver().restore(
            session, os.path.dirname(models.__file__) + "/" + model + "/"
        )
        taggrams, embeddings = [], []
        for patch in patches:
            taggram, embedding = session.run(
                [probabilities, penultimate], {x: patch[np.newaxis], is_training: False}
            )
            taggrams.append(taggram)
            embeddings.append(embedding)
    return np.concatenate(taggrams), np.concatenate(embeddings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    clips = commands.add_parser("clips", help="cut the fixture clips from arcade's music")
    clips.add_argument("music_dir", type=Path)
    commands.add_parser("reference", help="run the original TF musicnn (needs its venv)")
    arguments = parser.parse_args()
    if arguments.command == "clips":
        make_clips(arguments.music_dir)
    else:
        make_reference()


if __name__ == "__main__":
    main()
