"""The reference model: built deterministically, loaded with ONNX Runtime, strict about shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from workloads.model import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    DEFAULT_INPUT_SIZE,
    DEFAULT_OUTPUT_SIZE,
    build_model,
    load_model,
    pick_providers,
)


@pytest.fixture(scope="module")
def model():
    return load_model()


def test_default_model_dimensions_and_provider(model) -> None:
    assert (model.input_size, model.output_size) == (DEFAULT_INPUT_SIZE, DEFAULT_OUTPUT_SIZE)
    assert model.provider in (CUDA_PROVIDER, CPU_PROVIDER), f"unexpected provider {model.provider}"


def test_predict_lists_and_arrays_agree(model) -> None:
    batch = np.random.default_rng(1).uniform(-1, 1, (5, model.input_size)).astype(np.float32)
    from_list = model.predict(batch.tolist())
    from_array = model.predict(batch)
    assert isinstance(from_list, list) and all(isinstance(r, list) for r in from_list)
    assert np.asarray(from_list).shape == (5, model.output_size)
    np.testing.assert_allclose(from_list, from_array, rtol=1e-6)


def test_rows_are_independent_of_batching(model) -> None:
    batch = np.random.default_rng(2).uniform(-1, 1, (7, model.input_size))
    together = np.asarray(model.predict(batch))
    one_by_one = np.asarray([model.predict(batch[i : i + 1])[0] for i in range(7)])
    np.testing.assert_allclose(together, one_by_one, rtol=1e-5, atol=1e-6)


def test_the_mlp_computes_what_it_says(tmp_path: Path) -> None:
    """relu(x W1 + b1) W2 + b2, recomputed in NumPy from the file's own weights."""
    import onnx
    from onnx import numpy_helper

    path = build_model(tmp_path / "m.onnx", input_size=3, hidden_size=5, output_size=2, seed=7)
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    x = np.array([[0.5, -1.0, 2.0], [1.0, 1.0, 1.0]], dtype=np.float32)
    expected = np.maximum(x @ weights["w1"] + weights["b1"], 0) @ weights["w2"] + weights["b2"]
    np.testing.assert_allclose(load_model(str(path)).predict(x), expected, rtol=1e-5, atol=1e-6)


def test_build_is_deterministic(tmp_path: Path) -> None:
    first = build_model(tmp_path / "a.onnx").read_bytes()
    second = build_model(tmp_path / "b.onnx").read_bytes()
    assert first == second, "the same arguments must produce the same model bytes"
    assert build_model(tmp_path / "c.onnx", seed=1).read_bytes() != first, "another seed, other weights"


def test_build_rejects_empty_layers(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"hidden_size must be >= 1 \(got 0\)"):
        build_model(tmp_path / "m.onnx", hidden_size=0)


def test_dynamic_batch_dimension(model) -> None:
    for rows in (1, 3, 64):
        assert len(model.predict(np.zeros((rows, model.input_size)))) == rows


@pytest.mark.parametrize(
    "batch",
    [
        pytest.param([[1.0] * 15], id="row-too-short"),
        pytest.param([[1.0] * 17], id="row-too-long"),
        pytest.param([], id="no-rows"),
        pytest.param([1.0] * 16, id="one-dimensional"),
        pytest.param([[[1.0] * 16]], id="three-dimensional"),
        pytest.param([[1.0] * 16, [1.0] * 3], id="ragged"),
        pytest.param([["a"] * 16], id="not-numbers"),
        pytest.param(np.zeros((2, 8)), id="array-wrong-width"),
    ],
)
def test_wrong_shapes_raise_value_error(model, batch) -> None:
    with pytest.raises(ValueError, match="batch must"):
        model.predict(batch)


def test_providers_prefer_cuda_when_available() -> None:
    assert pick_providers(["CUDAExecutionProvider", "CPUExecutionProvider"]) == [CUDA_PROVIDER, CPU_PROVIDER]
    assert pick_providers(["AzureExecutionProvider", "CPUExecutionProvider"]) == [CPU_PROVIDER]


def test_model_with_two_inputs_is_refused(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["c"])],
        "two-inputs",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 4]),
        ],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, ["batch", 4])],
    )
    path = tmp_path / "two.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    with pytest.raises(ValueError, match=r"expected one input and one output \(got 2 inputs, 1 outputs\)"):
        load_model(str(path))
