"""Where MusiCNN's time goes, for bench/musicnn.py: single-core numbers from the ONNX graph.

Multiply-adds counted from the graph, this machine's float32 matmul rate, one patch's latency,
one track's decode / front end / inference split, and onnxruntime's per-operator profile: the
physical floor beside what the pool measures.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime

from soundspan_plugins.musicnn.frontend import N_MELS, PATCH_FRAMES, SAMPLE_RATE, iter_patch_batches
from soundspan_plugins.musicnn.inference import MusicnnTagger
from soundspan_plugins.shared.audio import decode_mono


def multiply_adds_per_patch(onnx_path: Path) -> dict[str, int]:
    """Multiply-adds of one patch, per op type, from the graph's shapes with batch = 1."""
    model = onnx.load(str(onnx_path))
    for value in list(model.graph.input) + list(model.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_param")
        dim.dim_value = 1
    model = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for value in [*model.graph.value_info, *model.graph.input, *model.graph.output]:
        shapes[value.name] = [d.dim_value for d in value.type.tensor_type.shape.dim]
    for tensor in model.graph.initializer:
        shapes[tensor.name] = list(tensor.dims)
    counts: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type == "Conv":
            weight = shapes[node.input[1]]  # [Cout, Cin/groups, k...]
            output = shapes[node.output[0]]  # [1, Cout, spatial...]
            macs = int(np.prod(output)) * int(np.prod(weight[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a, b = shapes[node.input[0]], shapes[node.input[1]]
            transposed = any(a.name == "transB" and a.i for a in node.attribute)
            inner = b[-1] if transposed else b[-2]
            outer = b[-2] if transposed else b[-1]
            macs = int(np.prod(a[:-1])) * inner * outer
        else:
            continue
        counts[node.op_type] = counts.get(node.op_type, 0) + macs
    return counts


def single_core_gflops(size: int = 1024, repeats: int = 20) -> float:
    """Best float32 matmul GFLOP/s (2 flops per multiply-add) with one BLAS thread."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def patch_latency(onnx_path: Path, card, batch: int, runs: int) -> float:
    """Median seconds per patch of onnxruntime (1 thread) on random patches of `batch`."""
    tagger = MusicnnTagger(onnx_path, card, threads=1)
    patches = np.random.default_rng(1).random((batch, PATCH_FRAMES, N_MELS), np.float32) * 3
    for _ in range(5):
        tagger.run(patches)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        tagger.run(patches)
        times.append(time.perf_counter() - started)
    return statistics.median(times) / batch


def time_split(onnx_path: Path, card, track: Path, batch_size: int) -> dict[str, float]:
    """Seconds for one track in one thread: decode alone, front end (decode + mel), inference."""
    started = time.perf_counter()
    for _ in decode_mono(track, SAMPLE_RATE):
        pass
    decode_s = time.perf_counter() - started
    started = time.perf_counter()
    batches = list(iter_patch_batches(track, batch_size))
    frontend_s = time.perf_counter() - started
    tagger = MusicnnTagger(onnx_path, card, threads=1)
    tagger.run(batches[0])
    started = time.perf_counter()
    for patches in batches:
        tagger.run(patches)
    inference_s = time.perf_counter() - started
    return {
        "decode_s": decode_s,
        "frontend_s": frontend_s,
        "inference_s": inference_s,
        "patches": sum(len(batch) for batch in batches),
    }


def op_profile(onnx_path: Path, work: Path, runs: int = 20) -> dict[str, float]:
    """Milliseconds per patch by operator type (onnxruntime's profiler, 1 thread, batch 1)."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(work / f"profile-{onnx_path.stem}")
    session = onnxruntime.InferenceSession(str(onnx_path), options)
    patch = np.random.default_rng(1).random((1, PATCH_FRAMES, N_MELS), np.float32) * 3
    for _ in range(runs):
        session.run(None, {session.get_inputs()[0].name: patch})
    events = json.loads(Path(session.end_profiling()).read_text())
    by_op: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"]["op_name"]
            by_op[op] = by_op.get(op, 0.0) + event["dur"] / 1000 / runs
    return dict(sorted(by_op.items(), key=lambda item: -item[1]))
