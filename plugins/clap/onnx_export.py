"""Export a CLAP audio tower (and its projection) to ONNX once per model.

The export runs in a process of its own (runtime.py) that ends with it, and is cached under
the data dir keyed by the weights' content hash: `clap-audio-<hash>-e<version>.onnx`, its
weights (`-weights.bin`) and mel filter bank (`-mel.npy`) beside it, with torch's embeddings of
the probe clips (`-reference.npy`) and a record that the entry awaits its check
(`-unchecked.json`). The check runs in a process without torch (export_check.py): it
compares the graph's embeddings with torch's and writes the entry's record, so an entry
without that record (a crash mid-write, a check never run) is never trusted. An export whose
embeddings are not within SAME_VERSION_MIN_COSINE of torch's is recorded and refused: the
workers then run torch.

The TorchScript exporter (`dynamo=False`) is used: it still works in torch 2.13, traces HTSAT
with a dynamic batch axis in seconds, and needs no extra package (the dynamo exporter wants
onnxscript and its dependencies only for this).

Memory, larger_clap_music's audio tower (276 MB of weights): torch's exporter writes the
weights into the graph in memory, holding them about three times over beside the model (its
protobuf, the serialized string, Python's bytes: 1.65 GiB at the peak), and streams them to
files of their own only for models over 2 GB. So the graph is exported without its weights
(they stay the graph's inputs, named as in the module's state_dict), and the weights are then
written one tensor at a time into a file beside it (`-weights.bin`) that the graph names as
its external data: about 0.82 GiB at the peak (the trace, its process's malloc set as
shared.pool.ONE_OFF_ENVIRONMENT sets it), the same embeddings to the last bit. The weights
are not folded into the graph by torch (no constant folding: it would rename them where it
cannot be followed); onnxruntime folds the same transposes when it loads the graph. Traced
without autograd, the trace keeps no activations for a backward pass. The check loads the
graph in onnxruntime (the weights again, and its arena): in this process, beside torch's
imports, that was the peak (0.92 GiB); in its own it is about half.
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from soundspan_plugins.shared.files import (
    file_facts,
    move_into_place,
    temporary_path,
    write_atomically,
)
from soundspan_plugins.shared.memory import return_freed_memory

from .embedding import embed_windows
from .frontend import MelFrontEnd
from .inference import INPUT_NAME, OUTPUT_NAME
from .loading import LoadedClap, load_clap
from .tower_cache import EXPORTER_VERSION, export_entry, unchecked_entry
from .windows import probe_clips
from .worker import ModelSource

log = logging.getLogger(__name__)

OPSET = 17


def export_unchecked(source: ModelSource, cache_dir: Path) -> None:
    """Export `source`'s audio tower into its cache entry, with torch's embeddings of the probe
    clips beside it and the record that says the entry awaits its check (export_check.py, in a
    process without torch, compares the graph's embeddings with them and vouches for it)."""
    digest, graph, weights, filters, _ = export_entry(source, cache_dir)
    reference_path, unchecked_path = unchecked_entry(graph)
    log.info("CLAP: exporting the audio tower of %s to ONNX (once) ...", source.model)
    clap = load_clap(
        source.model,
        towers=("audio",),
        allow_download=source.allow_download,
        cache_dir=source.cache_dir,
        allow_unsafe_checkpoint=source.allow_unsafe_checkpoint,
    )
    front_end = front_end_of(clap)
    reference = embed_windows(clap, probe_clips(), batch_size=1)  # its activations: 50 MiB less
    return_freed_memory()
    cache_dir.mkdir(parents=True, exist_ok=True)
    partials = {
        path: temporary_path(cache_dir, path.suffix)
        for path in (graph, weights, filters, reference_path)
    }
    try:
        # the graph names its weights file by its final name; no record trusts it before ours
        export_audio_tower(clap, partials[graph], partials[weights], weights.name)
        for path, array in ((filters, front_end.mel_filters), (reference_path, reference)):
            with partials[path].open("wb") as handle:
                np.save(handle, array)
        for final, partial in partials.items():
            move_into_place(partial, final)
    finally:
        for partial in partials.values():
            partial.unlink(missing_ok=True)
    unchecked = {
        "weights_sha256": digest,
        "model": source.model,
        "exporter_version": EXPORTER_VERSION,
        "torch": torch.__version__,
        **file_facts(
            {
                "onnx_bytes": graph,
                "onnx_weights_bytes": weights,
                "mel_filters_bytes": filters,
                "reference_bytes": reference_path,
            }
        ),
        "fft_size": front_end.fft_size,
        "hop_length": front_end.hop_length,
        "channels": front_end.channels,
    }
    write_atomically(unchecked_path, json.dumps(unchecked, indent=1) + "\n")


class _AudioTowerGraph(torch.nn.Module):
    """The audio tower as the workers run it: mel features in, unit-length embeddings out.

    is_longer is all False: no clip is longer than 10 s (see embedding.embed_windows)."""

    def __init__(self, clap: LoadedClap) -> None:
        super().__init__()
        self.audio_model = clap.model.audio_model
        self.audio_projection = clap.model.audio_projection

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        is_longer = torch.zeros((input_features.shape[0], 1), dtype=torch.bool)
        pooled = self.audio_model(input_features=input_features, is_longer=is_longer).pooler_output
        return F.normalize(self.audio_projection(pooled), dim=-1)


def export_audio_tower(clap: LoadedClap, graph: Path, weights: Path, weights_name: str) -> None:
    """Write `clap`'s audio tower and projection to `graph` as ONNX, any batch size, its weights
    to `weights`, which the graph finds beside itself as `weights_name`.

    Traced under no_grad: with autograd on, the traced run's output keeps every activation for
    a backward pass until the export ends (half a GiB for HTSAT); the graph is the same."""
    tower = _AudioTowerGraph(clap).eval()
    # one clip (two held ~25 MiB more at the peak); the batch axis stays free, and the check
    # embeds the three probe clips in one batch, so a graph tied to 1 would be refused
    example = torch.from_numpy(front_end_of(clap)(probe_clips()[:1]))
    with warnings.catch_warnings(), torch.no_grad():
        # the tracer's notes on HTSAT's shape checks (constant for 10-s clips) and the
        # TorchScript exporter's deprecation notice: nothing a user can act on
        warnings.simplefilter("ignore")
        torch.onnx.export(
            tower,
            (example,),
            str(graph),
            dynamo=False,
            export_params=False,  # the graph alone; the weights are written below
            do_constant_folding=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
        )
    model = onnx.load(str(graph))
    with weights.open("wb") as handle:
        _write_weights(model.graph, tower.state_dict(), handle, weights_name)
    onnx.save(model, str(graph))


WEIGHTS_ALIGNMENT = 4096  # each tensor page-aligned: a reader may map it rather than copy it


def _write_weights(graph: onnx.GraphProto, state: dict, handle: BinaryIO, name: str) -> None:
    """Turn `graph`'s weight inputs (every input but the features, named as in the module's
    `state`) into initializers kept in `handle`, written one tensor at a time."""
    features = [value for value in graph.input if value.name == INPUT_NAME]
    for value in graph.input:
        if value.name == INPUT_NAME:
            continue
        if value.name not in state:
            raise ValueError(f"the exported graph takes {value.name!r}, not a weight of the model")
        array = state[value.name].detach().contiguous().numpy()
        offset = handle.seek(0, io.SEEK_END)
        offset += handle.write(bytes(-offset % WEIGHTS_ALIGNMENT))
        handle.write(array.data)
        tensor = onnx.TensorProto(
            name=value.name,
            dims=array.shape,
            data_type=onnx.helper.np_dtype_to_tensor_dtype(array.dtype),
            data_location=onnx.TensorProto.EXTERNAL,
        )
        for key, entry in (("location", name), ("offset", offset), ("length", array.nbytes)):
            tensor.external_data.add(key=key, value=str(entry))
        graph.initializer.append(tensor)
    del graph.input[:]
    graph.input.extend(features)


def front_end_of(clap: LoadedClap) -> MelFrontEnd:
    """The numpy front end that computes what `clap`'s checked feature extractor computes."""
    extractor = clap.feature_extractor
    if extractor is None:
        raise ValueError("this CLAP model was loaded without its audio tower")
    fused = extractor.truncation == "fusion"  # HTK filters, 4 channels; else Slaney, 1
    return MelFrontEnd(
        mel_filters=extractor.mel_filters if fused else extractor.mel_filters_slaney,
        fft_size=extractor.fft_window_size,
        hop_length=extractor.hop_length,
        channels=4 if fused else 1,
    )
