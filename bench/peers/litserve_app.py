"""LitServe apps for the peer benchmark (bench/peers.py):
`python litserve_app.py mlp|constant PORT`.

Written from LitServe's docs (lightning.ai/docs/litserve/api-reference/litapi and
/features/batching): a `litserve.LitAPI` with `setup`, `decode_request`, `predict`,
`encode_response`, and for batching `batch` / `unbatch` with `max_batch_size` and
`batch_timeout` (seconds) given to the LitAPI (LitServe 0.2.19 deprecates them on LitServer,
litserve/server.py); `LitServer(api, accelerator="cpu", workers_per_device=1).run(port=...)`. LitServe
runs the model in a worker process fed by queues, behind a uvicorn API server process.
The body is `{"input": [16 floats]}`; the answer `{"output": [4 floats]}`.

- `MLP`: the reference ONNX file (MODEL_PATH) through `workloads.model.load_model`,
  batches of up to 32 gathered for up to 5 ms (the reference server's defaults);
  EXTRA_BATCH_LATENCY_MS adds a blocking sleep per model call (the GPU stand-in).
- `Constant`: no batching, a constant answer: LitServe's HTTP ceiling.

Access logs off (as in the reference server); no client.py written.
"""

from __future__ import annotations

import os
import sys
import time

import litserve as ls
import numpy as np

from workloads.model import load_model

MAX_BATCH_SIZE = 32
BATCH_TIMEOUT_S = 0.005


class MLP(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.model = load_model(os.environ["MODEL_PATH"])
        self.extra_s = float(os.environ.get("EXTRA_BATCH_LATENCY_MS", "0") or 0) / 1000

    def decode_request(self, request: dict) -> list[float]:
        return request["input"]

    def batch(self, inputs: list[list[float]]) -> np.ndarray:
        return np.asarray(inputs, dtype=np.float32)

    def predict(self, rows: np.ndarray) -> np.ndarray:
        outputs = self.model.predict_array(rows)
        if self.extra_s:
            time.sleep(self.extra_s)  # blocking, like a synchronous GPU call
        return outputs

    def unbatch(self, outputs: np.ndarray) -> list[np.ndarray]:
        return list(outputs)

    def encode_response(self, output: np.ndarray) -> dict:
        return {"output": output.tolist()}


CONSTANT = {"output": [0.1, 0.2, 0.3, 0.4]}


class Constant(ls.LitAPI):
    def setup(self, device: str) -> None:
        pass

    def decode_request(self, request: dict) -> None:
        return None

    def predict(self, _: None) -> dict:
        return CONSTANT

    def encode_response(self, output: dict) -> dict:
        return output


def main(which: str, port: int) -> None:
    api = MLP(max_batch_size=MAX_BATCH_SIZE, batch_timeout=BATCH_TIMEOUT_S) if which == "mlp" else Constant()
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1)
    server.run(
        host="127.0.0.1",
        port=port,
        num_api_servers=1,
        log_level="warning",
        generate_client_file=False,
        access_log=False,
    )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
