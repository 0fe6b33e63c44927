"""Rebuild the musicnn tagger (Pons & Serra, 2019) as an ONNX graph from its TF1 checkpoint.

Mirrors ``build_musicnn`` in musicnn 0.1.0's ``models.py`` op for op, with every layer in
inference mode (``is_training=False``: batch norm uses the moving statistics, dropout is off).
TensorFlow works in NHWC with height = time and width = mel band; the graph here works in NCHW,
and the mid-end's "2-D convolutions as wide as the feature axis" become plain 1-D convolutions.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .checkpoint import CheckpointError, read_checkpoint
from .tags import TAGS_BY_DATASET

if TYPE_CHECKING:
    import onnx

PATCH_FRAMES = 187  # librosa.time_to_frames(3 s, sr=16000, n_fft=512, hop=256) + 1
N_MELS = 96
EMBEDDING_DIM = 200  # width of the penultimate dense layer (after its batch norm)
SUPPORTED_MODELS = ("MSD_musicnn", "MTT_musicnn")
DEFAULT_MODEL = "MSD_musicnn"
OPSET = 17
BATCH_NORM_EPSILON = 1e-3  # tf.compat.v1.layers.batch_normalization default
INPUT_NAME, TAGGRAM_NAME, EMBEDDING_NAME = "patches", "taggram", "embedding"
# what `pip install 'soundspan-host[musicnn]'` brings (pyproject.toml's musicnn extra), by
# module: imported only to convert and run the model, so a host without them still starts
EXTRA_MODULES = ("onnx", "onnxruntime", "crc32c")
INSTALL_EXTRA = "pip install 'soundspan-host[musicnn]'"


class ModelNotAvailable(Exception):
    """The requested musicnn model or its checkpoint cannot be found."""


@dataclass(frozen=True)
class ModelCard:
    """What a converted musicnn model is: its outputs' meaning and the checkpoint it came from."""

    model_id: str
    tags: tuple[str, ...]
    embedding_dim: int
    checkpoint_sha256: str
    patch_frames: int = PATCH_FRAMES
    n_mels: int = N_MELS


REINSTALL_HINT = "Reinstall the checkpoints with `pip install --no-deps musicnn==0.1.0`."


def missing_packages() -> list[str]:
    """The modules of MusiCNN's extra that are not installed here."""
    return [name for name in EXTRA_MODULES if not _installed(name)]


def missing_extra() -> ModelNotAvailable | None:
    """Why MusiCNN cannot run here when a package of its extra is not installed; None when
    all are."""
    if not (missing := missing_packages()):
        return None
    return ModelNotAvailable(
        f"MusiCNN needs Python packages not installed here ({', '.join(missing)}): "
        f"{INSTALL_EXTRA}, or set [musicnn] enabled = false."
    )


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken install is no install
        return False


def checkpoint_index(model_name: str = DEFAULT_MODEL) -> Path:
    """Locate the ``.index`` of a checkpoint shipped in the ``musicnn`` wheel, importing nothing.

    The wheel's Python pins TensorFlow 1 and old numpy, so it is installed with ``--no-deps``
    and only its data files are used; ``find_spec`` of a top-level package executes nothing.
    """
    _check_supported(model_name)
    spec = importlib.util.find_spec("musicnn")
    if spec is None or not spec.submodule_search_locations:
        reason = f"The musicnn checkpoints are not installed. {REINSTALL_HINT}"
        if (extra := missing_extra()) is not None:  # a bare `pip install soundspan-host`
            reason = f"{extra} {reason}"
        raise ModelNotAvailable(reason)
    # Saver.restore was given "<package>/<model>/", so the files are named ".index" etc.
    return Path(next(iter(spec.submodule_search_locations))) / model_name / ".index"


def checkpoint_files(index_path: Path) -> list[Path]:
    """The files that hold a checkpoint's weights: the index, then its data shards."""
    base = index_path.name.removesuffix(".index")
    return [index_path, *sorted(index_path.parent.glob(f"{base}.data-*-of-*"))]


def checkpoint_sha256(index_path: Path) -> str:
    """One digest over the index and every data shard, so any changed weight changes the key."""
    digest = hashlib.sha256()
    for path in checkpoint_files(index_path):
        if not path.is_file():
            raise ModelNotAvailable(f"Checkpoint file {path} does not exist. {REINSTALL_HINT}")
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def convert(model_name: str, out_path: Path, index_path: Path | None = None) -> ModelCard:
    """Write the ONNX graph of ``model_name`` to ``out_path`` and describe it.

    ``index_path`` overrides which checkpoint is read (default: the one in the musicnn wheel).
    """
    import onnx  # the musicnn extra's: imported to convert, never to start the host

    _check_supported(model_name)
    index_path = checkpoint_index(model_name) if index_path is None else Path(index_path)
    tags = TAGS_BY_DATASET[model_name.split("_")[0]]
    try:
        weights = read_checkpoint(index_path)
    except CheckpointError as error:
        raise CheckpointError(f"{error} {REINSTALL_HINT}") from error
    model = build_model(weights, n_tags=len(tags), model_name=model_name)
    onnx.save_model(model, str(out_path))
    return ModelCard(
        model_id=model_name,
        tags=tags,
        embedding_dim=EMBEDDING_DIM,
        checkpoint_sha256=checkpoint_sha256(index_path),
    )


def _check_supported(model_name: str) -> None:
    if model_name not in SUPPORTED_MODELS:
        raise ModelNotAvailable(
            f"Unknown musicnn model {model_name!r}; choose one of {', '.join(SUPPORTED_MODELS)}."
        )


class _GraphBuilder:
    """Accumulates nodes and initializers; each method adds one layer and returns its output."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        self.weights = weights
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._counter = 0

    def _name(self, hint: str) -> str:
        self._counter += 1
        return f"{hint}_{self._counter}"

    def constant(self, hint: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self._name(hint)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], hint: str | None = None, **attributes) -> str:
        from onnx import helper

        output = self._name(hint or op.lower())
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    def variable(self, name: str) -> np.ndarray:
        if name not in self.weights:
            raise ModelNotAvailable(
                f"The checkpoint has no variable {name!r}; is it a musicnn one?"
            )
        return self.weights[name].astype(np.float32)

    def batch_norm(self, x: str, layer: str) -> str:
        """tf.compat.v1.layers.batch_normalization(training=False) on channel axis 1."""
        params = [
            self.constant(f"{layer}/{part}", self.variable(f"{layer}/{part}"))
            for part in ("gamma", "beta", "moving_mean", "moving_variance")
        ]
        return self.node("BatchNormalization", [x, *params], layer, epsilon=BATCH_NORM_EPSILON)

    def conv(self, x: str, layer: str, pads: list[int], kernel_layout: str) -> str:
        """Conv + bias + ReLU; TF kernels are [height, width, in, out], ONNX ones [out, in, ...]."""
        kernel = self.variable(f"{layer}/kernel")
        if kernel_layout == "2d":  # NCHW conv, channels in = TF's in
            weight = kernel.transpose(3, 2, 0, 1)
        else:  # "width-as-channels": TF [k, width, 1, out] -> 1-D conv [out, width, k]
            weight = kernel[:, :, 0, :].transpose(2, 1, 0)
        inputs = [x, self.constant(f"{layer}/kernel", weight),
                  self.constant(f"{layer}/bias", self.variable(f"{layer}/bias"))]  # fmt: skip
        conv = self.node("Conv", inputs, layer, pads=pads)
        return self.node("Relu", [conv], f"{layer}/relu")

    def dense(self, x: str, layer: str) -> str:
        inputs = [x, self.constant(f"{layer}/kernel", self.variable(f"{layer}/kernel")),
                  self.constant(f"{layer}/bias", self.variable(f"{layer}/bias"))]  # fmt: skip
        return self.node("Gemm", inputs, layer)


def _same_padding(kernel_height: int) -> list[int]:
    """TF 'same' puts the odd extra row of padding at the end (ONNX order: begins, then ends)."""
    total = kernel_height - 1
    return [total // 2, 0, total - total // 2, 0]


def build_model(weights: dict[str, np.ndarray], n_tags: int, model_name: str) -> onnx.ModelProto:
    """The musicnn graph: [N, 187, 96] log-mel patches -> taggram [N, tags], embedding [N, 200].

    Layer names follow TF's creation order in ``build_musicnn`` (``conv2d_<i>`` and
    ``batch_normalization_<i>`` are numbered in the order the layers are built).
    """
    import onnx
    from onnx import TensorProto, helper

    g = _GraphBuilder(weights)
    batch = "batch"
    # [N, T, F] -> [N, 1, T, F]: TF's expand_dims(x, 3) in NCHW.
    x = g.node("Unsqueeze", [INPUT_NAME, g.constant("axis1", np.array([1], np.int64))])
    x = g.batch_norm(x, "batch_normalization")

    # Front-end. Timbral blocks pad time by 3 then convolve "valid"; temporal blocks use 'same'.
    def block(conv_layer: str, bn_layer: str, pads: list[int]) -> str:
        y = g.batch_norm(g.conv(x, conv_layer, pads, "2d"), bn_layer)
        return g.node("ReduceMax", [y], f"{conv_layer}/pool", axes=[3], keepdims=0)  # [N, C, T]

    frontend = [
        block("conv2d", "batch_normalization_1", [3, 0, 3, 0]),  # 7 x 38 (0.4 * 96)
        block("conv2d_1", "batch_normalization_2", [3, 0, 3, 0]),  # 7 x 67 (0.7 * 96)
        block("conv2d_2", "batch_normalization_3", _same_padding(128)),
        block("conv2d_3", "batch_normalization_4", _same_padding(64)),
        block("conv2d_4", "batch_normalization_5", _same_padding(32)),
    ]
    frontend_features = g.node("Concat", frontend, "frontend", axis=1)  # [N, 561, T]

    # Mid-end: three 7-frame convolutions over the whole feature axis, two with residuals.
    cnn1 = g.batch_norm(
        g.conv(frontend_features, "conv2d_5", [3, 3], "1d"), "batch_normalization_6"
    )
    conv2 = g.batch_norm(g.conv(cnn1, "conv2d_6", [3, 3], "1d"), "batch_normalization_7")
    cnn2 = g.node("Add", [conv2, cnn1], "cnn2")
    conv3 = g.batch_norm(g.conv(cnn2, "conv2d_7", [3, 3], "1d"), "batch_normalization_8")
    cnn3 = g.node("Add", [conv3, cnn2], "cnn3")
    midend = g.node("Concat", [frontend_features, cnn1, cnn2, cnn3], "midend", axis=1)

    # Back-end: temporal max and mean pooling, interleaved per feature as TF's flatten of
    # concat([max, mean], axis=2) leaves them: [max_0, mean_0, max_1, mean_1, ...].
    max_pool = g.node("ReduceMax", [midend], "max_pool", axes=[2], keepdims=1)  # [N, 753, 1]
    mean_pool = g.node("ReduceMean", [midend], "mean_pool", axes=[2], keepdims=1)
    pooled = g.node("Concat", [max_pool, mean_pool], "pool", axis=2)
    flat = g.node("Flatten", [pooled], "flat_pool", axis=1)  # [N, 1506]
    flat = g.batch_norm(flat, "batch_normalization_9")
    dense = g.node("Relu", [g.dense(flat, "dense")], "dense/relu")
    embedding = g.batch_norm(dense, "batch_normalization_10")
    logits = g.dense(embedding, "dense_1")
    g.nodes.append(helper.make_node("Sigmoid", [logits], [TAGGRAM_NAME], name=TAGGRAM_NAME))
    g.nodes.append(helper.make_node("Identity", [embedding], [EMBEDDING_NAME], name=EMBEDDING_NAME))

    graph = helper.make_graph(
        g.nodes,
        f"musicnn_{model_name}",
        [
            helper.make_tensor_value_info(
                INPUT_NAME, TensorProto.FLOAT, [batch, PATCH_FRAMES, N_MELS]
            )
        ],
        [
            helper.make_tensor_value_info(TAGGRAM_NAME, TensorProto.FLOAT, [batch, n_tags]),
            helper.make_tensor_value_info(
                EMBEDDING_NAME, TensorProto.FLOAT, [batch, EMBEDDING_DIM]
            ),
        ],
        g.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="soundspan-musicnn",
        doc_string=f"musicnn {model_name} (Pons & Serra 2019), converted from its TF1 checkpoint.",
    )
    model.ir_version = 8  # readable by every onnxruntime that knows opset 17
    onnx.checker.check_model(model)
    return model
