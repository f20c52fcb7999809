"""bench/peers.py, the reference server against MLServer, BentoML and LitServe: what each server
is sent, how its answer is read and checked, the table and its ratios, skipping a peer that is
not installed, the peers' app files and the setup script. Runs without any peer installed; the
peers' own smoke runs need .venv-peers/<peer> (scripts/setup-peers.sh) and skip without it.
No number is judged."""

from __future__ import annotations

import ast
import json
import random
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench import peers, server_speed
from bench.peers import PEERS, Row, RowResult
from tests.workloads.helpers import ROOT

ROWS = [[0.5] * 16, [-1.0] * 8 + [0.25] * 8]


def split(request: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = request.partition(b"\r\n\r\n")
    start, *fields = head.decode().split("\r\n")
    headers = dict(f.split(": ", 1) for f in fields)
    assert int(headers["Content-Length"]) == len(body), headers
    return start, headers, body


# -- what each server is sent -------------------------------------------------------------------


def test_each_server_gets_its_own_body() -> None:
    assert json.loads(peers.request_body("ours", ROWS)) == {"inputs": ROWS}
    assert json.loads(peers.request_body("bentoml", ROWS)) == {"inputs": ROWS}  # the API parameter's name
    assert json.loads(peers.request_body("oip", ROWS)) == {
        "inputs": [{"name": "input", "shape": [2, 16], "datatype": "FP32", "data": ROWS[0] + ROWS[1]}]
    }
    assert json.loads(peers.request_body("litserve", ROWS[:1])) == {"input": ROWS[0]}
    with pytest.raises(ValueError, match=r"a LitServe request carries one row \(got 2\)"):
        peers.request_body("litserve", ROWS)
    with pytest.raises(ValueError, match="unknown body format 'xml'"):
        peers.request_body("xml", ROWS)


@pytest.mark.parametrize(
    ("body", "path"),
    [("ours", "/v1/predict"), ("oip", "/v2/models/mlp/infer"), ("bentoml", "/predict"), ("litserve", "/predict")],
)
def test_each_request_goes_to_the_servers_path(body: str, path: str) -> None:
    start, headers, data = split(peers.http_request(body, ROWS[:1]))
    assert start == f"POST {path} HTTP/1.1"
    assert headers["Content-Type"] == "application/json" and headers["Host"] == "127.0.0.1"
    assert data == peers.request_body(body, ROWS[:1])


def test_every_server_gets_the_same_rows_and_arrivals() -> None:
    """Under requests_for, server_speed's request builder re-encodes the rows it drew: the same
    rows as without it, the rng left in the same state (so the arrival times that follow are the
    same), and for our own format the very bytes server_speed sends."""
    plain_rng, rng = random.Random(7), random.Random(7)
    plain = [server_speed._request_bytes(plain_rng, 16) for _ in range(4)]
    with peers.requests_for("oip"):
        reencoded = [server_speed._request_bytes(rng, 16) for _ in range(4)]
    assert rng.random() == plain_rng.random()
    for before, after in zip(plain, reencoded, strict=True):
        rows = json.loads(split(before)[2])["inputs"]
        assert split(after)[0] == "POST /v2/models/mlp/infer HTTP/1.1"
        assert json.loads(split(after)[2])["inputs"][0]["data"] == rows[0]
    with peers.requests_for("ours"):
        assert server_speed._request_bytes(random.Random(7), 16) == plain[0]
    assert server_speed._request_bytes(random.Random(7), 16) == plain[0], "the original builder is back"


class Stub(BaseHTTPRequestHandler):
    """Records each request line and body; answers `answer` (keep-alive, Content-Length)."""

    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, bytes]] = []
    answer = b"{}"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append((self.requestline, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.answer)))
        self.end_headers()
        self.wfile.write(self.answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[tuple[str, type[Stub]]]:
    handler = type("Handler", (Stub,), {"seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_the_load_client_sends_the_peers_body(stub: tuple[str, type[Stub]]) -> None:
    """server_speed's own `offer`, inside requests_for: every request on the wire is the peer's
    (this fails if server_speed stops building its requests with `_request_bytes`)."""
    url, handler = stub
    with peers.requests_for("oip"):
        step = server_speed.offer(url, 40, 0.3, 4, 1, 5000)
    assert step.sent > 0 and step.ok == step.sent and step.errors == 0, step
    assert len(handler.seen) == step.sent
    for line, body in handler.seen:
        assert line == "POST /v2/models/mlp/infer HTTP/1.1"
        (tensor,) = json.loads(body)["inputs"]
        assert (tensor["name"], tensor["shape"], tensor["datatype"], len(tensor["data"])) == (
            "input",
            [1, 16],
            "FP32",
            16,
        )


# -- how each answer is read and checked ----------------------------------------------------------

# Answers as each server sent them for one row (trimmed to two outputs), from manual runs.
ANSWERS = {
    "ours": b'{"outputs": [[-0.52, 0.02]], "model": "mlp", "batch_size": 1}',
    "oip": b'{"model_name":"mlp","id":"x","parameters":{},"outputs":[{"name":"output","shape":[2,2],'
    b'"datatype":"FP32","parameters":{"content_type":"np"},"data":[-0.52,0.02,0.5,0.86]}]}',
    "bentoml": b"[[-0.52, 0.02]]",
    "litserve": b'{"output":[-0.52,0.02]}',
}


def test_answers_are_read_in_each_servers_format() -> None:
    assert peers.answer_rows("ours", ANSWERS["ours"]) == [[-0.52, 0.02]]
    assert peers.answer_rows("oip", ANSWERS["oip"]) == [[-0.52, 0.02], [0.5, 0.86]]
    assert peers.answer_rows("bentoml", ANSWERS["bentoml"]) == [[-0.52, 0.02]]
    assert peers.answer_rows("litserve", ANSWERS["litserve"]) == [[-0.52, 0.02]]


class FixedModel:
    def predict(self, rows: list[list[float]]) -> list[list[float]]:
        return [[sum(r), 1.0] for r in rows]


def test_a_wrong_answer_stops_the_row(stub: tuple[str, type[Stub]]) -> None:
    url, handler = stub
    row = Row("bentoml-batched", "bentoml, batching", "bentoml", "model", "bentoml")
    want = FixedModel().predict(peers.CHECK_ROWS)
    handler.answer = json.dumps(want).encode()
    peers.check_answers(row, url, FixedModel())  # the right rows: passes
    assert handler.seen[-1] == ("POST /predict HTTP/1.1", peers.request_body("bentoml", peers.CHECK_ROWS))
    handler.answer = json.dumps([[want[0][0] + 0.01, 1.0], *want[1:]]).encode()
    with pytest.raises(RuntimeError, match=r"bentoml-batched: wrong answer .* \(the model says"):
        peers.check_answers(row, url, FixedModel())
    handler.answer = json.dumps(want[:2]).encode()
    with pytest.raises(RuntimeError, match="wrong answer"):  # a row missing
        peers.check_answers(row, url, FixedModel())
    ceiling = Row("bentoml-ceiling", "bentoml: constant", "bentoml", "ceiling", "bentoml")
    peers.check_answers(ceiling, url, FixedModel())  # a ceiling answers a constant: any 2xx


# -- the table ------------------------------------------------------------------------------------


def result(row: Row, *maxima: float | None, p50: float | None = 1.5) -> list[RowResult]:
    return [RowResult(row, m, {300.0: p50}) for m in maxima]


def test_the_table_shows_medians_ranges_and_ratios() -> None:
    by_key = {r.key: r for r in peers.rows(2.0)}
    results = {
        "ours-batched": result(by_key["ours-batched"], 3600, 3720, 3800, p50=0.5),
        "ours-b1": result(by_key["ours-b1"], 1000, 1100, 900),
        "mlserver-batched": result(by_key["mlserver-batched"], 780, 700, 800, p50=6.0),
        "bentoml-batched": result(by_key["bentoml-batched"], None, None, None, p50=None),
        "ours-batched-gpu2": result(by_key["ours-batched-gpu2"], 3000),
        "ours-b1-gpu2": result(by_key["ours-b1-gpu2"], 400),
        "litserve-batched-gpu2": result(by_key["litserve-batched-gpu2"], 420),
        "ours-ceiling": result(by_key["ours-ceiling"], 12000),
        "mlserver-ceiling": result(by_key["mlserver-ceiling"], 3000, 2000),
    }
    ort = {"batch32_rows_per_s": 4_000_000.0, "batch1_calls_per_s": 150_000.0}
    table = peers.render(results, ort, ["# head"], [300.0], 50.0, ["skipped litserve: no virtualenv"])
    assert table.splitlines() == [
        "# head",
        "",
        "| row | max req/s at p99 <= 50 ms (median, range) | p50 at 300 req/s | ours / row |",
        "|---|---:|---:|---:|",
        "| ours, batching | 3,720 (3,600-3,800) | 0.50 ms | - |",
        "| ours, batch 1 | 1,000 (900-1,100) | 1.50 ms | - |",
        "| mlserver, batching | 780 (700-800) | 6.00 ms | x4.77 |",
        "| bentoml, batching | none met it | failed | ours only (met no rate) |",
        "| ours, batching +2ms | 3,000 | 1.50 ms | - |",
        "| ours, batch 1 +2ms | 400 | 1.50 ms | - |",
        "| litserve, batching +2ms | 420 | 1.50 ms | x7.14 |",
        "| ours: aiohttp constant (uvloop) | 12,000 | - | - |",
        "| mlserver: constant | 2,500 (2,000-3,000) | - | x4.80 |",
        "| ONNX Runtime alone, in process | 4,000,000 rows/s at batch 32, 150,000 calls/s at batch 1 | | |",
        "",
        "- ours, batching / batch 1, without a stand-in: x3.72",
        "- ours, batching / batch 1, with the 2 ms stand-in: x7.50",
        "- skipped litserve: no virtualenv",
    ]


def test_a_peer_row_without_ours_has_no_ratio() -> None:
    row = next(r for r in peers.rows(2.0) if r.key == "mlserver-batched")
    table = peers.render({row.key: result(row, 700)}, {}, [], [300.0], 50.0, [])
    assert "| mlserver, batching | 700 | 1.50 ms | - |" in table.splitlines()
    assert peers.ratio(None, 700) == "n/a (ours met no rate)"


def test_rows_pair_every_model_row_with_and_without_the_stand_in() -> None:
    keys = [r.key for r in peers.rows(2.0)]
    for server in ("ours", *PEERS):
        assert f"{server}-batched" in keys and f"{server}-batched-gpu2" in keys and f"{server}-ceiling" in keys
    assert {"mlserver-pool-batched", "mlserver-pool-batched-gpu2"} <= set(keys)
    assert {r.stand_in_ms for r in peers.rows(3.5) if r.key.endswith("-gpu3.5")} == {3.5}
    bodies = {r.server: r.body for r in peers.rows(2.0) if r.kind == "model" and r.key != "ours-batched-oip"}
    assert bodies == {"ours": "ours", "mlserver": "oip", "bentoml": "bentoml", "litserve": "litserve"}
    assert peers.comparable(next(r for r in peers.rows(2.0) if r.key == "litserve-batched-gpu2")) == "ours-batched-gpu2"


# -- skipping a peer that is not installed ----------------------------------------------------------


def test_a_missing_peer_is_skipped_with_a_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--venvs", str(tmp_path), "--rows", "mlserver-batched,litserve-ceiling", "--repeats", "1"]
    argv += ["--duration", "0.1", "--json"]
    assert peers.main(argv) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    want = [
        f"skipped {peer}: no virtualenv at {tmp_path / peer / 'bin' / 'python'} (scripts/setup-peers.sh {peer} makes it)"
        for peer in ("mlserver", "litserve")
    ]
    assert out["skipped"] == want and out["rows"] == {}
    assert [f"- {line}" for line in want] == out["table"].splitlines()[-2:]
    assert captured.err.splitlines()[:2] == want
    args = peers.parse_args(["--venvs", str(tmp_path), "--rows", "ours-ceiling"])
    assert peers.choose(args) == ([next(r for r in peers.rows(2.0) if r.key == "ours-ceiling")], [])


def test_argument_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        peers.parse_args(["--rows", "ours-batched,tgi-batched"])
    assert exited.value.code == 2
    assert "--rows: unknown ['tgi-batched']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        peers.parse_args(["--stand-in-ms", "0"])
    assert "--stand-in-ms must be > 0 (got 0.0)" in capsys.readouterr().err


# -- the peers' files -----------------------------------------------------------------------------

APP_FILES = sorted((ROOT / "bench" / "peers").rglob("*.py"))


def constants(path: Path) -> dict[str, object]:
    tree = ast.parse(path.read_text(), str(path))
    return {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and isinstance(node.value, ast.Constant)
    }


def classes(path: Path) -> set[str]:
    return {node.name for node in ast.parse(path.read_text()).body if isinstance(node, ast.ClassDef)}


def test_the_peer_apps_compile() -> None:
    assert {p.name for p in APP_FILES} == {"peer_runtime.py", "bentoml_service.py", "litserve_app.py"}
    for path in APP_FILES:
        compile(path.read_text(), str(path), "exec")


def test_the_peers_batch_like_ours() -> None:
    """The same batch size and wait as the reference server's defaults (MAX_BATCH_SIZE=32,
    MAX_WAIT_MS=5), and the entry points bench/peers.py starts exist."""
    apps = ROOT / "bench" / "peers"
    runtime_classes = classes(apps / "mlserver" / "peer_runtime.py")
    mlp = json.loads((apps / "mlserver" / "mlp" / "model-settings.json").read_text())
    constant = json.loads((apps / "mlserver" / "constant" / "model-settings.json").read_text())
    assert (mlp["max_batch_size"], mlp["max_batch_time"]) == (32, 0.005)
    assert "max_batch_size" not in constant
    assert mlp["name"] == constant["name"] == "mlp"  # peers.OIP_PATH
    for settings in (mlp, constant):
        module, _, cls = settings["implementation"].partition(".")
        assert module == "peer_runtime" and cls in runtime_classes, settings
    server = json.loads((apps / "mlserver" / "settings.json").read_text())
    assert server == {"debug": False, "host": "127.0.0.1"}  # ports and parallel_workers: per row
    assert constants(apps / "bentoml_service.py")["MAX_BATCH_SIZE"] == 32
    assert {"MLP", "Constant"} <= classes(apps / "bentoml_service.py")
    lit = constants(apps / "litserve_app.py")
    assert (lit["MAX_BATCH_SIZE"], lit["BATCH_TIMEOUT_S"]) == (32, 0.005)
    assert {"MLP", "Constant"} <= classes(apps / "litserve_app.py")


def test_each_peer_is_started_from_its_venv_with_free_ports(tmp_path: Path) -> None:
    by_key = {r.key: r for r in peers.rows(2.0)}
    argv, cwd, port = peers.peer_command(by_key["mlserver-batched"], tmp_path / "venvs", tmp_path)
    assert argv == [
        str(tmp_path / "venvs" / "mlserver" / "bin" / "python"),
        "-m",
        "mlserver.cli.main",
        "start",
        str(cwd),
    ]
    settings = json.loads((cwd / "settings.json").read_text())
    assert settings["http_port"] == port and len({port, settings["grpc_port"], settings["metrics_port"]}) == 3
    assert (settings["debug"], settings["parallel_workers"]) == (False, 0)
    assert sorted(p.name for p in cwd.iterdir()) == ["model", "peer_runtime.py", "settings.json"]
    assert json.loads((cwd / "model" / "model-settings.json").read_text())["implementation"] == "peer_runtime.OnnxMLP"
    _, cwd, _ = peers.peer_command(by_key["mlserver-pool-batched-gpu2"], tmp_path / "venvs", tmp_path)
    assert json.loads((cwd / "settings.json").read_text())["parallel_workers"] == 1  # MLServer's default
    _, cwd, _ = peers.peer_command(by_key["mlserver-ceiling"], tmp_path / "venvs", tmp_path)
    assert json.loads((cwd / "settings.json").read_text())["parallel_workers"] == 0
    assert json.loads((cwd / "model" / "model-settings.json").read_text())["implementation"] == "peer_runtime.Constant"
    argv, cwd, port = peers.peer_command(by_key["bentoml-batched-gpu2"], tmp_path / "venvs", tmp_path)
    assert argv[1:] == ["-m", "bentoml", "serve", "bentoml_service:MLP", "--host", "127.0.0.1", "--port", str(port)]
    assert cwd == ROOT / "bench" / "peers"
    argv, _, port = peers.peer_command(by_key["litserve-ceiling"], tmp_path / "venvs", tmp_path)
    assert argv[1:] == ["litserve_app.py", "constant", str(port)]


def test_the_peer_requirements_pin_everything() -> None:
    dev = dict(
        line.split("==")
        for line in (ROOT / "requirements-dev.txt").read_text().splitlines()
        if line.startswith(("onnxruntime==", "numpy=="))
    )
    for peer in PEERS:
        lines = [
            line
            for line in (ROOT / "bench" / "peers" / f"requirements-{peer}.txt").read_text().splitlines()
            if line and not line.startswith("#")
        ]
        pins = dict(line.split("==") for line in lines)
        assert all(line.count("==") == 1 and " " not in line for line in lines), peer
        assert peer in pins, f"requirements-{peer}.txt does not pin {peer}"
        for name, version in dev.items():
            assert pins.get(name) == version, (
                f"requirements-{peer}.txt: {name} {pins.get(name)}, the project's {version}"
            )


def test_the_setup_script_parses_and_passes_shellcheck() -> None:
    script = ROOT / "scripts" / "setup-peers.sh"
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(["bash", str(script), "tgi"], capture_output=True, text=True, timeout=30)
    assert (proc.returncode, proc.stderr) == (2, "setup-peers: unknown peer 'tgi' (known: mlserver bentoml litserve)\n")
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed: run scripts/install-shellcheck.sh (scripts/setup.sh --dev runs it)")
    proc = subprocess.run([shellcheck, "--format=gcc", str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_peer_venvs_are_ignored_by_git() -> None:
    proc = subprocess.run(
        ["git", "-C", str(ROOT), "check-ignore", "-q", ".venv-peers/mlserver/bin/python"], capture_output=True
    )
    assert proc.returncode == 0, ".gitignore does not ignore .venv-peers/"


# -- end to end, tiny -----------------------------------------------------------------------------

TINY = ["--repeats", "1", "--duration", "0.3", "--warmup", "0.1", "--start-rate", "30", "--max-steps", "1"]
TINY += ["--p50-rates", "30", "--p99-ms", "5000", "--json"]


def check_tiny_run(out: dict, keys: list[str]) -> None:
    assert set(out["rows"]) == set(keys), out["skipped"]
    for key, (run,) in out["rows"].items():
        assert len(run["steps"]) == (1 if key.endswith("ceiling") else 2), run
        for step in run["steps"]:
            assert step["sent"] > 0 and step["ok"] == step["sent"] and step["errors"] == 0, (key, step)


def test_ours_tiny_run(capsys: pytest.CaptureFixture[str]) -> None:
    """Our server on its Open Inference Protocol endpoint (the body MLServer gets, answers
    checked against the model first) and our HTTP ceiling, end to end."""
    keys = ["ours-batched-oip", "ours-ceiling"]
    assert peers.main([*TINY, "--rows", ",".join(keys)]) == 0
    check_tiny_run(json.loads(capsys.readouterr().out), keys)


@pytest.mark.parametrize("peer", PEERS)
def test_peer_tiny_run(peer: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The peer's model row (answers checked against the model first) and its ceiling, end to end."""
    if not peers.venv_python(peers.VENVS, peer).exists():
        pytest.skip(f"no .venv-peers/{peer}: this smoke run needs the peer installed (scripts/setup-peers.sh {peer})")
    keys = [f"{peer}-batched", f"{peer}-ceiling"] + (["mlserver-pool-batched"] if peer == "mlserver" else [])
    assert peers.main([*TINY, "--rows", ",".join(keys)]) == 0
    check_tiny_run(json.loads(capsys.readouterr().out), keys)
