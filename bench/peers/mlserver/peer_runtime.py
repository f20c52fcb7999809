"""MLServer custom runtimes for the peer benchmark (bench/peers.py).

Written from MLServer's docs: "Custom Inference Runtimes" (a subclass of `mlserver.MLModel`
with `async load()` and `async predict(InferenceRequest) -> InferenceResponse`) and "Adaptive
Batching" (`max_batch_size` / `max_batch_time` in model-settings.json: MLServer merges queued
requests along the first dimension of each input and splits the response back,
mlserver/batching/requests.py BatchedRequests). Docs: docs.seldon.ai/mlserver/user-guide/custom,
/user-guide/adaptive-batching, /api-reference/modelsettings. The request is an Open Inference Protocol body:
one FP32 input `[rows, 16]`; NumpyCodec decodes it to an array and encodes the output.

- `OnnxMLP`: the reference ONNX file (MODEL_PATH) through `workloads.model.load_model`, the same
  ONNX Runtime session setup as the reference server; EXTRA_BATCH_LATENCY_MS adds a blocking
  sleep per model call (a stand-in for a GPU's per-call cost, as in the reference server).
- `Constant`: answers a constant without decoding anything: MLServer's HTTP ceiling.
"""

from __future__ import annotations

import os
import time

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput

from workloads.model import load_model


class OnnxMLP(MLModel):
    async def load(self) -> bool:
        self._model = load_model(os.environ["MODEL_PATH"])
        self._extra_s = float(os.environ.get("EXTRA_BATCH_LATENCY_MS", "0") or 0) / 1000
        self.ready = True
        return self.ready

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        rows = self.decode(payload.inputs[0], default_codec=NumpyCodec)
        outputs = self._model.predict_array(np.asarray(rows, dtype=np.float32))
        if self._extra_s:
            time.sleep(self._extra_s)  # blocking, like a synchronous GPU call
        return InferenceResponse(
            model_name=self.name,
            outputs=[NumpyCodec.encode_output(name="output", payload=outputs)],
        )


CONSTANT = ResponseOutput(name="output", shape=[1, 4], datatype="FP32", data=[0.1, 0.2, 0.3, 0.4])


class Constant(MLModel):
    async def load(self) -> bool:
        self.ready = True
        return self.ready

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        return InferenceResponse(model_name=self.name, outputs=[CONSTANT])
