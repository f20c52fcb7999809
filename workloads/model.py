"""The reference model: a small ONNX MLP built in code, run with ONNX Runtime.

The default model is a two-layer perceptron, ``relu(x @ W1 + b1) @ W2 + b2``, with
a dynamic batch dimension and weights drawn from a seeded NumPy generator, so
every process (server, batch worker, tests) that builds it gets the same bytes
and the same predictions without shipping a weights file.

    model = load_model()            # build the default model into a cache file
    model = load_model("/m.onnx")   # or load any ONNX model with one 2-D input
    model.predict([[0.0] * model.input_size])

ONNX Runtime runs on CUDA when the installed build offers the CUDA execution
provider (the image installs ``onnxruntime-gpu``), otherwise on the CPU; the
provider that was actually picked is ``Model.provider``.

``build_model`` writes a model of another size (the batching benchmark uses a
wider hidden layer to make each model call cost something).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

DEFAULT_INPUT_SIZE = 16
DEFAULT_HIDDEN_SIZE = 32
DEFAULT_OUTPUT_SIZE = 4
DEFAULT_SEED = 20240611

# Opset 17 / IR 8 is old enough for every ONNX Runtime release we might pin and
# new enough for the four operators used here.
OPSET = 17
IR_VERSION = 8

# Part of the cache file name: bump when build_model changes what it writes, so a
# stale cached file from an older build is never picked up.
BUILD_REVISION = 1

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


def default_model_path(
    input_size: int = DEFAULT_INPUT_SIZE,
    hidden_size: int = DEFAULT_HIDDEN_SIZE,
    output_size: int = DEFAULT_OUTPUT_SIZE,
    seed: int = DEFAULT_SEED,
) -> Path:
    """Where the built-in model of these dimensions is cached (per user temp dir)."""
    name = f"gpu-inference-mlp-{input_size}x{hidden_size}x{output_size}-s{seed}-r{BUILD_REVISION}.onnx"
    return Path(tempfile.gettempdir()) / name


def build_model(
    path: str | os.PathLike[str],
    *,
    input_size: int = DEFAULT_INPUT_SIZE,
    hidden_size: int = DEFAULT_HIDDEN_SIZE,
    output_size: int = DEFAULT_OUTPUT_SIZE,
    seed: int = DEFAULT_SEED,
) -> Path:
    """Write the MLP as an ONNX file at `path` (atomically) and return the path.

    The same arguments always produce the same file.
    """
    # Imported here: only building needs the `onnx` package, loading does not.
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    for label, value in (("input_size", input_size), ("hidden_size", hidden_size), ("output_size", output_size)):
        if value < 1:
            raise ValueError(f"{label} must be >= 1 (got {value})")
    rng = np.random.default_rng(seed)
    # He-style scaling keeps activations around unit size for unit-size inputs.
    w1 = (rng.standard_normal((input_size, hidden_size)) * np.sqrt(2.0 / input_size)).astype(np.float32)
    b1 = (rng.standard_normal(hidden_size) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((hidden_size, output_size)) * np.sqrt(2.0 / hidden_size)).astype(np.float32)
    b2 = (rng.standard_normal(output_size) * 0.1).astype(np.float32)

    nodes = [
        helper.make_node("MatMul", ["input", "w1"], ["h_mm"]),
        helper.make_node("Add", ["h_mm", "b1"], ["h_pre"]),
        helper.make_node("Relu", ["h_pre"], ["h"]),
        helper.make_node("MatMul", ["h", "w2"], ["o_mm"]),
        helper.make_node("Add", ["o_mm", "b2"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        inputs=[helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", input_size])],
        outputs=[helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", output_size])],
        initializer=[
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(b1, "b1"),
            numpy_helper.from_array(w2, "w2"),
            numpy_helper.from_array(b2, "b2"),
        ],
    )
    proto = helper.make_model(
        graph,
        producer_name="gpu-inference",
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
    )
    onnx.checker.check_model(proto)

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename: concurrent builders (several servers
    # starting at once) never see a half-written file.
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(proto.SerializeToString())
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; the image builds as root and serves as another user
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def pick_providers(available: Sequence[str] | None = None) -> list[str]:
    """CUDA first when this ONNX Runtime build has it, the CPU always as fallback."""
    available = ort.get_available_providers() if available is None else available
    return [CUDA_PROVIDER, CPU_PROVIDER] if CUDA_PROVIDER in available else [CPU_PROVIDER]


class Model:
    """An ONNX Runtime session for a model with one float input `[batch, n]` and one output `[batch, m]`."""

    def __init__(self, path: str | os.PathLike[str], providers: Sequence[str] | None = None) -> None:
        self.path = str(path)
        self._session = ort.InferenceSession(self.path, providers=list(providers or pick_providers()))
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(
                f"{self.path}: expected one input and one output (got {len(inputs)} inputs, {len(outputs)} outputs)"
            )
        self._input_name = inputs[0].name
        # Tensor metadata (name, element type, shape) as ONNX Runtime read it from the file:
        # what the Open Inference Protocol's model metadata reports (workloads/server/oip.py).
        self.inputs, self.outputs = list(inputs), list(outputs)
        self.input_size = _feature_size(self.path, "input", inputs[0].shape)
        self.output_size = _feature_size(self.path, "output", outputs[0].shape)
        # The provider the session actually uses: CUDA can be requested and still
        # be dropped (no driver, no device), in which case this says CPU.
        self.provider: str = self._session.get_providers()[0]

    def __repr__(self) -> str:
        return f"Model({self.path!r}, {self.input_size}->{self.output_size}, {self.provider})"

    def predict_array(self, batch: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        """Run one batch; returns a float32 array of shape `(rows, output_size)`."""
        try:
            array = np.asarray(batch, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"batch must be a 2-D array of numbers: {exc}") from None
        if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] != self.input_size:
            raise ValueError(f"batch must have shape (rows >= 1, {self.input_size}) (got {array.shape})")
        (result,) = self._session.run(None, {self._input_name: np.ascontiguousarray(array)})
        return result

    def predict(self, batch: np.ndarray | Sequence[Sequence[float]]) -> list[list[float]]:
        """Run one batch: one output row (`output_size` floats) per input row."""
        return self.predict_array(batch).tolist()


def _feature_size(path: str, what: str, shape: Sequence[object]) -> int:
    if len(shape) != 2 or not isinstance(shape[1], int):
        raise ValueError(f"{path}: the {what} must have shape [batch, n] with a fixed n (got {list(shape)})")
    return shape[1]


def load_model(path: str | None = None) -> Model:
    """Load the ONNX model at `path`; None builds (once) and loads the default MLP."""
    if path is None:
        cached = default_model_path()
        if not cached.exists():
            build_model(cached)
        path = str(cached)
    return Model(path)
