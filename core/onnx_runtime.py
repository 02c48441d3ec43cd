"""ONNX export of the recipe's torch modules and ONNX Runtime sessions for inference.

Training stays in torch; inference runs the exported graphs in ONNX Runtime (about 5x faster than
torch eager for this backbone on a 2-core CPU). Graphs are exported with the legacy TorchScript
exporter (``dynamo=False``: the dynamo exporter needs onnxscript, which we do not ship) at the
recipe's fixed working size, with a dynamic batch dimension.
"""
from __future__ import annotations

import io
import logging
import os
import warnings

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)
OPSET = 17

try:  # onnxruntime is a hard dependency, but the torch path must survive a broken install
    import onnxruntime as ort
except Exception as exc:  # pragma: no cover - depends on the installation
    ort = None
    _ORT_ERROR = exc
else:
    _ORT_ERROR = None


def available() -> bool:
    return ort is not None


def export(module: nn.Module, example: torch.Tensor, output_names: list[str]) -> bytes:
    """Serialize ``module`` (eval mode) to ONNX bytes with input 'x' and a dynamic batch axis."""
    module = module.eval()
    buf = io.BytesIO()
    dynamic = {"x": {0: "batch"}, **{name: {0: "batch"} for name in output_names}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is chatty about tracing
        torch.onnx.export(
            module,
            (example,),
            buf,
            input_names=["x"],
            output_names=output_names,
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )
    return buf.getvalue()


_RAW_CACHE: dict[tuple, bytes] = {}


def raw_extractor_graph(backbone: str, shape_hw: tuple[int, int]) -> bytes:
    """The backbone's raw patch-feature graph at one working size, exported once and cached.

    Exporting takes seconds; the graph depends only on the backbone weights, the working size and
    the exporter, so it is kept in memory and in the user's cache folder (rebuilt if missing).
    """
    from . import paths
    from .backbone import load_extractor, weights_digest

    key = (backbone, weights_digest(backbone)[:16], int(shape_hw[0]), int(shape_hw[1]), torch.__version__, OPSET)
    if key in _RAW_CACHE:
        return _RAW_CACHE[key]
    fname = "{}-{}-{}x{}-torch{}-op{}.onnx".format(*key).replace("+", "_")
    path = None
    try:
        path = paths.cache_dir() / "onnx" / fname
        if path.is_file():
            data = path.read_bytes()
            _RAW_CACHE[key] = data
            return data
    except OSError:
        path = None
    data = export(load_extractor(backbone), torch.zeros(1, 3, *shape_hw), ["raw"])
    _RAW_CACHE[key] = data
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError as exc:  # a read-only cache only costs time
            log.info("Could not cache %s: %s", path, exc)
    return data


def append_projection(raw_graph: bytes, mean: np.ndarray, components: np.ndarray) -> bytes:
    """Add the PCA projection (a 1x1 convolution) after a raw-feature graph's only output.

    Editing the graph avoids a second torch export (seconds) when a recipe is trained; the result
    is checked against the torch ``Embedder`` whenever an inspector loads it.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(raw_graph)
    graph = model.graph
    raw_out = graph.output[0]
    comps = np.asarray(components, dtype=np.float32)
    weight = np.ascontiguousarray(comps.T[:, :, None, None])
    bias = -(np.asarray(mean, dtype=np.float32) @ comps)
    graph.initializer.extend([numpy_helper.from_array(weight, "pca_weight"), numpy_helper.from_array(bias.astype(np.float32), "pca_bias")])
    graph.node.append(helper.make_node("Conv", [raw_out.name, "pca_weight", "pca_bias"], ["features"], kernel_shape=[1, 1]))
    dims = [d.dim_param or d.dim_value for d in raw_out.type.tensor_type.shape.dim]
    shape = [dims[0], comps.shape[1], *dims[2:]] if len(dims) == 4 else None
    out = helper.make_tensor_value_info("features", onnx.TensorProto.FLOAT, shape)
    del graph.output[:]
    graph.output.append(out)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def default_threads() -> int:
    """Inference threads: $STATION_THREADS when set, else every core."""
    cores = os.cpu_count() or 1
    try:
        wanted = int(os.environ.get("STATION_THREADS", "0"))
    except ValueError:
        wanted = 0
    return max(1, min(cores, wanted)) if wanted > 0 else cores


def session(model: bytes, threads: int | None = None) -> "ort.InferenceSession":
    if ort is None:  # pragma: no cover
        raise RuntimeError(f"ONNX Runtime is not available: {_ORT_ERROR}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads or default_threads())
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    # Do not let idle ORT threads spin: NumPy's BLAS (the nearest-neighbour search) runs right
    # after each graph and would otherwise compete with spinning threads for the same cores.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = ["CPUExecutionProvider"]
    return ort.InferenceSession(model, sess_options=so, providers=providers)


class OrtModel:
    """A session with the 'x' -> outputs calling convention of our exported graphs."""

    def __init__(self, model: bytes, threads: int | None = None):
        self.session = session(model, threads)
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.outputs, {"x": np.ascontiguousarray(x, dtype=np.float32)})


def max_relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| relative to the magnitude of a (robust to tiny values)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = max(float(np.abs(a).max()), 1e-6)
    return float(np.abs(a - b).max() / scale)
