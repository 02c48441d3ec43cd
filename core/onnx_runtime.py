"""ONNX export of the recipe's torch modules and ONNX Runtime sessions for inference.

Training stays in torch; inference runs the exported graphs in ONNX Runtime (about 5x faster than
torch eager for this backbone on a 2-core CPU). Graphs are exported with the legacy TorchScript
exporter (``dynamo=False``: the dynamo exporter needs onnxscript, which we do not ship) with a
dynamic batch dimension and, where the model allows it, dynamic height and width (the backbone
and PatchCore are fully convolutional; a per-position Gaussian is tied to its grid).
"""
from __future__ import annotations

import io
import logging
import os
import warnings

import numpy as np
import torch
from torch import nn

from .atomic import write_bytes_atomic

log = logging.getLogger(__name__)
OPSET = 17

# The station is offline: onnxruntime's telemetry (DNS lookups of Microsoft's host about 9 s after
# the import, a device id and an events database under ~/.cache/Microsoft) is off only when this is
# set before the import; disable_telemetry_events() is not enough. Every entry point imports
# onnxruntime through this module (tests/test_offline.py checks the station, the CLI and the files).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

try:  # onnxruntime is a hard dependency, but the torch path must survive a broken install
    import onnxruntime as ort
except Exception as exc:  # pragma: no cover - depends on the installation
    ort = None
    _ORT_ERROR: Exception | None = exc
else:
    _ORT_ERROR = None


def available() -> bool:
    return ort is not None


def export(module: nn.Module, example: torch.Tensor, output_names: list[str], spatial: bool = False) -> bytes:
    """Serialize ``module`` (eval mode) to ONNX bytes with input 'x' and a dynamic batch axis
    (``spatial``: dynamic height and width too)."""
    module = module.eval()
    buf = io.BytesIO()
    if spatial:
        dynamic = {"x": {0: "batch", 2: "height", 3: "width"},
                   **{name: {0: "batch", 2: f"{name}_h", 3: f"{name}_w"} for name in output_names}}
    else:
        dynamic = {"x": {0: "batch"}, **{name: {0: "batch"} for name in output_names}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is chatty about tracing
        torch.onnx.export(
            module,
            (example,),
            buf,  # type: ignore[arg-type]  # torch.onnx.export writes to a file object too (its docs)
            input_names=["x"],
            output_names=output_names,
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )
    return buf.getvalue()


_RAW_CACHE: dict[tuple, bytes] = {}


def raw_extractor_graph(backbone: str) -> bytes:
    """The backbone's raw patch-feature graph (any working size), exported once and cached.

    Exporting takes seconds; the graph depends only on the backbone weights and the exporter, so
    it is kept in memory and in the user's cache folder (rebuilt if missing).
    """
    from . import paths
    from .backbone import FEATURES_VERSION, RawTaps, load_extractor, weights_digest

    key = (backbone, weights_digest(backbone)[:16], torch.__version__, OPSET, FEATURES_VERSION)
    if key in _RAW_CACHE:
        return _RAW_CACHE[key]
    fname = "taps-{}-{}-any-torch{}-op{}-v{}.onnx".format(*key).replace("+", "_")
    path = None
    try:
        path = paths.cache_dir() / "onnx" / fname
        if path.is_file():
            data = path.read_bytes()
            _RAW_CACHE[key] = data
            return data
    except OSError:
        path = None
    data = export(RawTaps(load_extractor(backbone)), torch.zeros(1, 3, 256, 256), ["tap4", "tap8", "tap16"],
                  spatial=True)
    _RAW_CACHE[key] = data
    if path is not None:
        try:
            write_bytes_atomic(path, data)
        except OSError as exc:  # a read-only cache only costs time
            log.info("Could not cache %s: %s", path, exc)
    return data


def append_projection(raw_graph: bytes, mean: np.ndarray, components: np.ndarray) -> bytes:
    """Turn the raw three-tap graph into the embedder by appending the PCA projection.

    Each tap gets its slice of the projection as a 1x1 convolution; the stride-8 and stride-16
    parts are then aggregated (3x3 mean), the stride-16 part upsampled (bilinear x2, half-pixel)
    and the three summed with the bias, exactly as ``core.networks.Embedder`` computes. Editing the graph avoids a second torch export (seconds);
    the result is checked against the torch module whenever an inspector loads it.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(raw_graph)
    graph = model.graph
    outs = list(graph.output)
    if len(outs) != 3:
        raise ValueError("the raw graph must have three tap outputs")
    channels = [o.type.tensor_type.shape.dim[1].dim_value for o in outs]
    comps = np.asarray(components, dtype=np.float32)
    if sum(channels) != comps.shape[0]:
        raise ValueError(f"projection has {comps.shape[0]} inputs, the taps give {sum(channels)}")
    d = comps.shape[1]
    bias = (-(np.asarray(mean, dtype=np.float32) @ comps)).astype(np.float32).reshape(1, d, 1, 1)
    inits = [numpy_helper.from_array(bias, "pca_bias"),
             numpy_helper.from_array(np.array([1.0, 1.0, 2.0, 2.0], dtype=np.float32), "up_scales")]
    nodes = []
    start = 0
    projected = []
    for i, (out, c) in enumerate(zip(outs, channels)):
        w = np.ascontiguousarray(comps[start : start + c].T)[:, :, None, None]
        inits.append(numpy_helper.from_array(w, f"pca_w{i}"))
        nodes.append(helper.make_node("Conv", [out.name, f"pca_w{i}"], [f"proj{i}"], kernel_shape=[1, 1]))
        projected.append(f"proj{i}")
        start += c
    for i in (1, 2):  # 3x3 local aggregation after projecting (exact: both are linear)
        nodes.append(helper.make_node("AveragePool", [projected[i]], [f"agg{i}"], kernel_shape=[3, 3],
                                      strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=0))
        projected[i] = f"agg{i}"
    nodes.append(helper.make_node("Resize", [projected[2], "", "up_scales"], ["proj2_up"], mode="linear",
                                  coordinate_transformation_mode="half_pixel"))
    nodes.append(helper.make_node("Add", [projected[0], projected[1]], ["sum01"]))
    nodes.append(helper.make_node("Add", ["sum01", "proj2_up"], ["sum012"]))
    nodes.append(helper.make_node("Add", ["sum012", "pca_bias"], ["features"]))
    graph.initializer.extend(inits)
    graph.node.extend(nodes)
    dims = [dd.dim_param or dd.dim_value for dd in outs[1].type.tensor_type.shape.dim]
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("features", onnx.TensorProto.FLOAT, [dims[0], d, dims[2], dims[3]]))
    onnx.checker.check_model(model)
    return model.SerializeToString()


def chain(first: bytes, second: bytes, link: tuple[str, str] = ("features", "x")) -> bytes:
    """One graph running ``first`` then ``second`` (its input fed by ``first``'s output).

    The inspector runs embedder and scorer as one session call: no copy of the feature map out of
    and back into ONNX Runtime, no second dispatch.
    """
    import onnx
    from onnx import compose

    a = onnx.load_from_string(first)
    b = compose.add_prefix(onnx.load_from_string(second), prefix="s_")
    return compose.merge_models(a, b, io_map=[(link[0], "s_" + link[1])]).SerializeToString()


def default_threads() -> int:
    """Inference threads: $STATION_THREADS when set, else every core."""
    cores = os.cpu_count() or 1
    try:
        wanted = int(os.environ.get("STATION_THREADS", "0"))
    except ValueError:
        wanted = 0
    return max(1, min(cores, wanted)) if wanted > 0 else cores


def session(model: bytes, threads: int | None = None, spin: bool = True) -> "ort.InferenceSession":
    """An ONNX Runtime CPU session.

    ``spin``: let the pool's worker threads spin between operators instead of sleeping. Measured
    on the 2-core bench PC with the inspection graph: p50 11.4 ms spinning vs 16.1 ms sleeping
    (37 convolutions, each a wake-up otherwise). Spinning also burns a core for a moment after
    each run, so the station turns it off where a UI thread shares the cores; a process should
    never hold two spinning sessions that run in turn.
    """
    if ort is None:  # pragma: no cover
        raise RuntimeError(f"ONNX Runtime is not available: {_ORT_ERROR}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads or default_threads())
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    providers = ["CPUExecutionProvider"]
    return ort.InferenceSession(model, sess_options=so, providers=providers)


class OrtModel:
    """A session with the 'x' -> outputs calling convention of our exported graphs."""

    def __init__(self, model: bytes, threads: int | None = None, spin: bool = True):
        self.session = session(model, threads, spin)
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.outputs, {"x": np.ascontiguousarray(x, dtype=np.float32)})


def max_relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| relative to the magnitude of a (robust to tiny values)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = max(float(np.abs(a).max()), 1e-6)
    return float(np.abs(a - b).max() / scale)
