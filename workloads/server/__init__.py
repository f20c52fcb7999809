"""The reference inference server: HTTP in front of `workloads.model`, with dynamic micro-batching.

    python -m workloads.server              # settings from the environment (see config.py)
    python -m workloads.server --help

Framework: aiohttp. One well-kept package gives the server, the client (the load
generator and the tests use it) and the pieces this server needs without glue:
a body-size limit enforced while reading (413), an `AppRunner` whose lifecycle we
drive ourselves (so SIGTERM handling, the drain and the exit code are ours, not a
process manager's), and a graceful close that waits for handlers still writing.
Starlette + uvicorn would do as well for the HTTP part, but uvicorn owns the
signals and the shutdown sequence, which is exactly what we need to control.

The one request that carries the load, a plain `POST /v1/predict`, is answered by a lean
HTTP/1.1 path of our own (`fast`: an asyncio protocol, pre-built response headers, a
callback per batch, no task per request): aiohttp's request and response objects were
about a third of the CPU at saturation. Every other request, and every request of a form
that path does not take, is aiohttp's, exactly as before.

Modules: `config` (settings), `metric_names` (the metric names other code relies
on), `metrics` (the Prometheus registry), `batcher` (queue + micro-batching), `app`
(endpoints and lifecycle), `bodies` (request bodies, batch errors), `fast` (the lean
/v1/predict path), `connections` (listen backlog, header deadline), `oip` (Open
Inference Protocol), `__main__` (signals).

This package imports nothing on purpose: the Pulumi program and the dashboards can
import `workloads.server.metric_names` without aiohttp, NumPy or ONNX Runtime.
"""
