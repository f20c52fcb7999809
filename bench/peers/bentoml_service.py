"""BentoML services for the peer benchmark (bench/peers.py), served with
`bentoml serve bentoml_service:MLP` (or `:Constant`) from this folder.

Written from BentoML's docs: "Services" (`@bentoml.service` on a class, `@bentoml.api` methods
whose type-annotated parameters are the JSON body's fields) and "Adaptive batching"
(`@bentoml.api(batchable=True, max_batch_size=..., max_latency_ms=...)`: the method receives
the inputs of several requests concatenated along `batch_dim` 0 and returns one output per
input row; BentoML's dispatcher sizes the batches and the wait from the latencies it observes:
docs.bentoml.com/en/latest/guides/adaptive-batching.html, and CorkDispatcher in
bentoml/_internal/marshal/dispatcher.py, which runs one batch at a time).
The body is `{"inputs": [[16 floats], ...]}`; the answer a JSON array of output rows.

- `MLP`: the reference ONNX file (MODEL_PATH) through `workloads.model.load_model`;
  EXTRA_BATCH_LATENCY_MS adds a blocking sleep per model call (the GPU stand-in). A sync API
  method: BentoML runs it in its thread pool, off the event loop.
- `Constant`: the same input declaration, a constant answer: BentoML's HTTP ceiling.

One worker each (`workers=1`), access logs off (as in the reference server).
"""

from __future__ import annotations

import os
import time

import bentoml
import numpy as np

from workloads.model import load_model

MAX_BATCH_SIZE = 32
# BentoML's own default latency budget (the dispatcher cancels a request, 503, when its
# estimated latency passes it): kept, so that the dispatcher never drops work on its own.
MAX_LATENCY_MS = 60_000
SERVICE_OPTIONS = {"workers": 1, "logging": {"access": {"enabled": False}}}


@bentoml.service(**SERVICE_OPTIONS)
class MLP:
    def __init__(self) -> None:
        self.model = load_model(os.environ["MODEL_PATH"])
        self.extra_s = float(os.environ.get("EXTRA_BATCH_LATENCY_MS", "0") or 0) / 1000

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH_SIZE, max_latency_ms=MAX_LATENCY_MS)
    def predict(self, inputs: np.ndarray) -> np.ndarray:
        outputs = self.model.predict_array(inputs)
        if self.extra_s:
            time.sleep(self.extra_s)  # blocking, like a synchronous GPU call
        return outputs


CONSTANT = np.array([[0.1, 0.2, 0.3, 0.4]], dtype=np.float32)


@bentoml.service(**SERVICE_OPTIONS)
class Constant:
    @bentoml.api
    def predict(self, inputs: np.ndarray) -> np.ndarray:
        return CONSTANT
