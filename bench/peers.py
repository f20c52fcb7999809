"""The reference server against its peers, side by side, measured in one run.

    python -m bench.peers [--repeats 3] [--duration 2] [--stand-in-ms 2] [--json]

Rows (each a fresh server process on 127.0.0.1, pinned with all its children to one core,
the client on another):
- `ours`: the reference server (`python -m workloads.server`, the working tree) with
  batching (MAX_BATCH_SIZE=32, MAX_WAIT_MS=5) and without (MAX_BATCH_SIZE=1), on
  `/v1/predict`; once more with batching on its Open Inference Protocol endpoint (the
  body MLServer gets).
- Seldon MLServer (adaptive batching, `max_batch_size` 32, `max_batch_time` 5 ms, a custom
  ONNX Runtime runtime: bench/peers/mlserver/), inference in the server process
  (`parallel_workers` 0) and in one worker process (`parallel_workers` 1, MLServer's
  default); BentoML (a `batchable=True` API, `max_batch_size` 32:
  bench/peers/bentoml_service.py); LitServe (a LitAPI with `max_batch_size` 32,
  `batch_timeout` 5 ms: bench/peers/litserve_app.py). Each in its own virtualenv under
  .venv-peers/ (scripts/setup-peers.sh), each sent its own request body (MLServer: the
  Open Inference Protocol).
- Every model row once more with `--stand-in-ms` (EXTRA_BATCH_LATENCY_MS in every server:
  a blocking sleep per model call, a stand-in for a GPU's per-call cost; a sleep, not compute).
- The HTTP-only ceiling of each framework: a handler answering a constant (ours: the
  aiohttp app on uvloop of bench/server_speed.py).
- ONNX Runtime alone, in process, on the server's core (bench/server_speed.py `ort_alone`).

Every server serves the same ONNX file through `workloads.model.load_model`. Before a
row is measured its answers are checked once against the model (the rows come back).
The load is bench/server_speed.py's: the same open-loop Poisson client (`offer`), the
same search for the highest rate whose p99 meets `--p99-ms` (`find_max`), the same
random rows and arrival times for every server (only the encoding of the body differs),
interleaved repeats, median and range. No assertion is made on the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import server_speed
from bench.processes import wait_ready
from bench.server_speed import (
    HEADER_END,
    LOAD_OPTIONS,
    Step,
    Variant,
    check_load_args,
    find_max,
    load_parser,
    measurer,
    ort_alone,
)
from bench.speed_report import median_and_range
from workloads.model import build_model, load_model

ROOT = Path(__file__).resolve().parents[1]
APPS = ROOT / "bench" / "peers"
VENVS = ROOT / ".venv-peers"
PEERS = ("mlserver", "bentoml", "litserve")
INPUT_SIZE = 16
# The model's name in the Open Inference Protocol paths: the reference server names it after
# the file's stem, MLServer after model-settings.json's "name".
MODEL_FILE = "mlp.onnx"
OIP_PATH = "/v2/models/mlp/infer"
# The path and body each server is sent (`rows`: one list of INPUT_SIZE floats per row).
PATHS = {"ours": "/v1/predict", "oip": OIP_PATH, "bentoml": "/predict", "litserve": "/predict"}
READY_PATHS = {"ours": "/readyz", "mlserver": "/v2/models/mlp/ready", "bentoml": "/readyz", "litserve": "/health"}


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    server: str  # "ours" or one of PEERS
    kind: str  # "model" or "ceiling"
    body: str  # a key of PATHS
    max_batch: int = 32
    stand_in_ms: float = 0.0
    workers: int = 0  # MLServer's parallel_workers: 0 runs inference in the server process


def rows(stand_in_ms: float) -> list[Row]:
    out = []
    for extra in (0.0, stand_in_ms):
        tag, suffix = (f"-gpu{extra:g}", f" +{extra:g}ms") if extra else ("", "")
        out.append(Row(f"ours-batched{tag}", f"ours, batching{suffix}", "ours", "model", "ours", 32, extra))
        out.append(Row(f"ours-b1{tag}", f"ours, batch 1{suffix}", "ours", "model", "ours", 1, extra))
        if not extra:
            out.append(Row("ours-batched-oip", "ours, batching, OIP body", "ours", "model", "oip", 32, extra))
        for peer, body in (("mlserver", "oip"), ("bentoml", "bentoml"), ("litserve", "litserve")):
            out.append(Row(f"{peer}-batched{tag}", f"{peer}, batching{suffix}", peer, "model", body, 32, extra))
            if peer == "mlserver":  # MLServer's default: inference in a worker process, fed over IPC
                label = f"mlserver, batching, 1 worker process{suffix}"
                out.append(Row(f"mlserver-pool-batched{tag}", label, peer, "model", body, 32, extra, workers=1))
    out.append(Row("ours-ceiling", "ours: aiohttp constant (uvloop)", "ours", "ceiling", "ours"))
    for peer, body in (("mlserver", "oip"), ("bentoml", "bentoml"), ("litserve", "litserve")):
        out.append(Row(f"{peer}-ceiling", f"{peer}: constant", peer, "ceiling", body))
    return out


def comparable(row: Row) -> str:
    """The row of ours that `row` is compared with: batching at the same stand-in, or our ceiling."""
    if row.kind == "ceiling":
        return "ours-ceiling"
    return "ours-batched" + (f"-gpu{row.stand_in_ms:g}" if row.stand_in_ms else "")


# -- the request each server gets -------------------------------------------------------------


def request_body(body: str, rows: list[list[float]]) -> bytes:
    """The JSON body of one request carrying `rows`, in the server's own format."""
    if body in ("ours", "bentoml"):  # ours: {"inputs": rows}; BentoML: the API parameter `inputs`
        payload: Any = {"inputs": rows}
    elif body == "oip":  # Open Inference Protocol: one typed tensor, row-major data
        flat = [x for row in rows for x in row]
        payload = {"inputs": [{"name": "input", "shape": [len(rows), INPUT_SIZE], "datatype": "FP32", "data": flat}]}
    elif body == "litserve":  # decode_request reads one row (LitServe batches requests, not rows)
        if len(rows) != 1:
            raise ValueError(f"a LitServe request carries one row (got {len(rows)})")
        payload = {"input": rows[0]}
    else:
        raise ValueError(f"unknown body format {body!r}; known: {sorted(PATHS)}")
    return json.dumps(payload).encode()


def http_request(body: str, rows: list[list[float]]) -> bytes:
    data = request_body(body, rows)
    head = (
        f"POST {PATHS[body]} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


def answer_rows(body: str, data: bytes) -> list[list[float]]:
    """The output rows in a server's answer."""
    answer = json.loads(data)
    if body == "ours":
        return answer["outputs"]
    if body == "oip":
        (tensor,) = answer["outputs"]
        n, m = tensor["shape"]
        return [tensor["data"][i * m : (i + 1) * m] for i in range(n)]
    if body == "bentoml":
        return answer
    if body == "litserve":
        return [answer["output"]]
    raise ValueError(f"unknown body format {body!r}")


@contextlib.contextmanager
def requests_for(body: str) -> Iterator[None]:
    """While inside, `server_speed.offer` sends `body`'s format. Its client builds its requests
    with `server_speed._request_bytes(rng, n)`; this wraps that function and re-encodes the
    rows it drew, so every server gets the same rows and the same arrival times (the rng is
    drawn from exactly as without the wrapper)."""
    original = server_speed._request_bytes

    def reencoded(rng: Any, input_size: int) -> bytes:
        raw = original(rng, input_size)
        return http_request(body, json.loads(raw.partition(HEADER_END)[2])["inputs"])

    server_speed._request_bytes = reencoded
    try:
        yield
    finally:
        server_speed._request_bytes = original


# -- the servers ------------------------------------------------------------------------------


def venv_python(venvs: Path, peer: str) -> Path:
    return venvs / peer / "bin" / "python"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _mlserver_repo(row: Row, workdir: Path) -> tuple[Path, int]:
    """A model repository for one run: settings.json with free ports, the runtime, one model."""
    repo = workdir / f"{row.key}-repo"
    shutil.rmtree(repo, ignore_errors=True)
    source = APPS / "mlserver"
    shutil.copytree(source / ("mlp" if row.kind == "model" else "constant"), repo / "model")
    shutil.copy(source / "peer_runtime.py", repo / "peer_runtime.py")
    settings = json.loads((source / "settings.json").read_text())
    port = free_port()
    settings.update(parallel_workers=row.workers, http_port=port, grpc_port=free_port(), metrics_port=free_port())
    (repo / "settings.json").write_text(json.dumps(settings, indent=2))
    return repo, port


def peer_command(row: Row, venvs: Path, workdir: Path) -> tuple[list[str], Path, int]:
    """argv, working directory and HTTP port of a peer's server."""
    python = str(venv_python(venvs, row.server))
    if row.server == "mlserver":
        repo, port = _mlserver_repo(row, workdir)
        return [python, "-m", "mlserver.cli.main", "start", str(repo)], repo, port
    port = free_port()
    if row.server == "bentoml":
        service = "bentoml_service:" + ("MLP" if row.kind == "model" else "Constant")
        argv = [python, "-m", "bentoml", "serve", service, "--host", "127.0.0.1", "--port", str(port)]
        return argv, APPS, port
    if row.server == "litserve":
        return [python, "litserve_app.py", "mlp" if row.kind == "model" else "constant", str(port)], APPS, port
    raise ValueError(f"unknown peer {row.server!r}")


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    url: str
    own_group: bool  # started in a session of its own: stopped as a process group

    def stop(self) -> None:
        if not self.own_group:
            server_speed.stop(self.proc)
            return
        # The peers fork workers (BentoML's supervisor, LitServe's inference worker, ...):
        # the whole group, which this script started, goes.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def launch(row: Row, ctx: dict[str, Any]) -> Running:
    core, workdir, model = ctx["server_core"], ctx["workdir"], ctx["model"]
    if row.server == "ours":
        kind, source = ("server", "new") if row.kind == "model" else ("ceiling", "uvloop")
        variant = Variant(row.key, row.label, kind, source, row.max_batch, row.stand_in_ms)
        proc, url = server_speed.launch(variant, model, ROOT, core, workdir)
        server_speed.wait_ready(url)
        return Running(proc, url, own_group=False)
    argv, cwd, port = peer_command(row, ctx["venvs"], workdir)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),  # `workloads.model` for the runtimes
        "MODEL_PATH": str(model),
        "EXTRA_BATCH_LATENCY_MS": f"{row.stand_in_ms:g}",
        "BENTOML_DO_NOT_TRACK": "true",
        "BENTOML_HOME": str(workdir / "bentoml-home"),
    }
    env.pop("VIRTUAL_ENV", None)
    log_path = workdir / f"{row.key}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: os.sched_setaffinity(0, {core}),  # inherited by every child
        )
    running = Running(proc, f"http://127.0.0.1:{port}", own_group=True)
    try:
        wait_ready(running.url + READY_PATHS[row.server], proc, log_path)
    except BaseException:
        running.stop()
        raise
    return running


CHECK_ROWS = [[round(0.1 * (i - j), 2) for j in range(INPUT_SIZE)] for i in range(3)]


def check_answers(row: Row, url: str, model: Any) -> None:
    """One request, its answer checked: the model's rows (a ceiling: any 2xx)."""
    rows_in = CHECK_ROWS[:1] if row.body == "litserve" else CHECK_ROWS
    request = urllib.request.Request(
        url + PATHS[row.body], data=request_body(row.body, rows_in), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            data = resp.read()
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{row.key}: {exc.code} {exc.read()[:500]!r}") from None
    if row.kind == "ceiling":
        return
    got = answer_rows(row.body, data)
    want = model.predict(rows_in)
    close = len(got) == len(want) and all(
        len(g) == len(w) and all(abs(a - b) <= 1e-5 for a, b in zip(g, w, strict=True))
        for g, w in zip(got, want, strict=True)
    )
    if not close:
        raise RuntimeError(f"{row.key}: wrong answer {got} (the model says {want})")


@dataclass
class RowResult:
    row: Row
    max_rps: float | None
    p50_at: dict[float, float | None]
    steps: list[Step] = field(default_factory=list)


def bench_row(row: Row, args: argparse.Namespace, ctx: dict[str, Any], start_rate: float, growth: float) -> RowResult:
    running = launch(row, ctx)
    url = running.url
    try:
        check_answers(row, url, ctx["model_obj"])
        with requests_for(row.body):
            measure = measurer(url, args)
            best, steps = find_max(measure, start_rate, growth, args.max_steps)
            p50_at: dict[float, float | None] = {}
            if row.kind == "model":
                for rate in args.p50_rates:
                    step = measure(rate)
                    steps.append(step)
                    p50_at[rate] = step.p50_ms if step.passed else None
    finally:
        running.stop()
    return RowResult(row, best, p50_at, steps)


# -- the table ----------------------------------------------------------------------------------


def ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None:
        return "n/a (ours met no rate)"
    if theirs is None:
        return "ours only (met no rate)"
    return f"x{ours / theirs:.2f}"


def render(
    results: dict[str, list[RowResult]],
    ort: dict[str, float],
    header: list[str],
    p50_rates: list[float],
    p99_ms: float,
    skipped: list[str],
) -> str:
    medians = {key: median_and_range([r.max_rps for r in runs], empty="", sep=",")[0] for key, runs in results.items()}
    p50_cols = [f"p50 at {r:g} req/s" for r in p50_rates]
    lines = [*header, ""]
    lines.append(
        f"| row | max req/s at p99 <= {p99_ms:g} ms (median, range) | " + " | ".join(p50_cols) + " | ours / row |"
    )
    lines.append("|---|---:|" + "---:|" * len(p50_cols) + "---:|")
    for runs in results.values():
        row = runs[0].row
        best, spread = median_and_range([r.max_rps for r in runs], empty="", sep=",")
        cells = ["none met it" if best is None else f"{best:,.0f}{spread}"]
        for rate in p50_rates:
            p50 = median_and_range([r.p50_at.get(rate) for r in runs], empty="", sep=",")[0]
            cells.append("-" if row.kind == "ceiling" else "failed" if p50 is None else f"{p50:.2f} ms")
        mine = comparable(row)
        # Our own rows are compared in the lines below the table (batching / batch 1).
        cells.append("-" if row.server == "ours" or mine not in medians else ratio(medians[mine], best))
        lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
    if ort:
        lines.append(
            f"| ONNX Runtime alone, in process | {ort['batch32_rows_per_s']:,.0f} rows/s at batch 32, "
            f"{ort['batch1_calls_per_s']:,.0f} calls/s at batch 1 |" + " |" * (len(p50_cols) + 1)
        )
    lines.append("")
    tags = sorted({r.row.stand_in_ms for runs in results.values() for r in runs if r.row.kind == "model"})
    for extra in tags:
        tag = f"-gpu{extra:g}" if extra else ""
        if "ours-batched" + tag in medians and "ours-b1" + tag in medians:
            batched, b1 = medians["ours-batched" + tag], medians["ours-b1" + tag]
            what = f"with the {extra:g} ms stand-in" if extra else "without a stand-in"
            lines.append(f"- ours, batching / batch 1, {what}: {ratio(batched, b1)}")
    lines.extend(f"- {line}" for line in skipped)
    return "\n".join(lines).rstrip() + "\n"


# -- the run ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = load_parser("python -m bench.peers", __doc__, "300")
    parser.add_argument("--stand-in-ms", type=float, default=2.0, help="GPU stand-in sleep per model call (default 2)")
    parser.add_argument("--rows", help="comma-separated row keys to run (default: all)")
    parser.add_argument("--venvs", type=Path, default=VENVS, help="where the peers' virtualenvs are (.venv-peers)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON (the table included)")
    args = parser.parse_args(argv)
    check_load_args(parser, args, (*LOAD_OPTIONS, "stand_in_ms"))
    known = [r.key for r in rows(args.stand_in_ms)]
    args.rows = args.rows.split(",") if args.rows else None
    unknown = sorted(set(args.rows or ()) - set(known))
    if unknown:
        parser.error(f"--rows: unknown {unknown}; known: {known}")
    return args


def choose(args: argparse.Namespace) -> tuple[list[Row], list[str]]:
    """The rows to run, and a line for each peer skipped because its virtualenv is missing."""
    wanted = [r for r in rows(args.stand_in_ms) if args.rows is None or r.key in args.rows]
    missing = [p for p in PEERS if not venv_python(args.venvs, p).exists()]
    skipped = [
        f"skipped {peer}: no virtualenv at {venv_python(args.venvs, peer)} (scripts/setup-peers.sh {peer} makes it)"
        for peer in missing
        if any(r.server == peer for r in wanted)
    ]
    return [r for r in wanted if r.server not in missing], skipped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chosen, skipped = choose(args)
    for line in skipped:
        print(line, file=sys.stderr)
    cores = sorted(os.sched_getaffinity(0))
    server_core, client_core = cores[0], cores[-1]
    os.sched_setaffinity(0, {client_core})
    results: dict[str, list[RowResult]] = {r.key: [] for r in chosen}
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        workdir = Path(tmp)
        model = build_model(workdir / MODEL_FILE)
        ctx = {"model": model, "model_obj": load_model(str(model)), "server_core": server_core}
        ctx.update(workdir=workdir, venvs=args.venvs)
        ort = ort_alone(model, server_core, min(1.0, args.duration))
        for repeat in range(args.repeats):
            for row in chosen:
                done = [r.max_rps for r in results[row.key] if r.max_rps]
                # Later repeats search near the earlier answers, in finer steps.
                start, growth = (0.85 * statistics.median(done), 1.1) if done else (args.start_rate, 1.5)
                results[row.key].append(bench_row(row, args, ctx, start, growth))
                print(
                    f"repeat {repeat + 1}/{args.repeats} {row.label}: {results[row.key][-1].max_rps}", file=sys.stderr
                )
    header = [
        "Ours against its peers: one server core, Poisson open-loop client on another, every row in this one run",
        "",
        f"- cores: server (and all its processes) on CPU {server_core}, client on CPU {client_core}"
        + (" (the same CPU: this machine has one)" if server_core == client_core else ""),
        f"- model: the reference MLP (ONNX Runtime CPU, one ONNX file for all); rows +{args.stand_in_ms:g}ms: a "
        "blocking sleep per model call in every server, a stand-in for a GPU's per-call cost (a sleep, not compute)",
        f"- load: 1 row per request, {args.connections} keep-alive connections, {args.duration:g} s per step, "
        f"{args.repeats} interleaved repeats (median, range); max req/s: p99 <= {args.p99_ms:g} ms, no errors",
        "- batching: ours MAX_BATCH_SIZE=32 MAX_WAIT_MS=5; MLServer max_batch_size 32, max_batch_time 5 ms; "
        "BentoML max_batch_size 32 (its adaptive window); LitServe max_batch_size 32, batch_timeout 5 ms",
        "- ours / row: our batching row at the same stand-in (ceilings: our ceiling) over the row; p50 'failed': "
        "that step missed the p99 bound or had errors",
    ]
    table = render(results, ort, header, args.p50_rates, args.p99_ms, skipped)
    if args.json:
        out = {
            "header": header,
            "ort": ort,
            "skipped": skipped,
            "rows": {
                key: [{"max_rps": r.max_rps, "p50_at": r.p50_at, "steps": [s.to_dict() for s in r.steps]} for r in runs]
                for key, runs in results.items()
            },
            "table": table,
        }
        print(json.dumps(out, indent=2))
    else:
        print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
