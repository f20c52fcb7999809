"""The load generator: against the real server, against a stub that holds requests, and its arguments."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import subprocess
import sys

import pytest
from aiohttp import web

from tests.workloads.helpers import ROOT, WAIT_S, ThreadServer, config, sample, scrape
from tests.workloads.helpers import run as run_client
from workloads.loadgen import LoadSpec, run_load
from workloads.loadgen.__main__ import parse_args
from workloads.model import load_model
from workloads.server.metric_names import REQUESTS_TOTAL


@pytest.fixture(scope="module")
def server():
    with ThreadServer(config(), model=load_model()) as srv:
        yield srv


def test_load_against_the_server_is_all_ok(server: ThreadServer) -> None:
    before = sample(run_client(lambda s: scrape(s, server.url)), REQUESTS_TOTAL, status="200") or 0
    report = asyncio.run(run_load(LoadSpec(url=server.url, rps=100, duration_s=1.0, concurrency=32)))
    after = sample(run_client(lambda s: scrape(s, server.url)), REQUESTS_TOTAL, status="200")
    assert (report.planned, report.sent, report.dropped, report.ok) == (100, 100, 0, 100), report.to_text()
    assert report.errors == 0, report.to_text()
    assert after - before == 100, "the server counted every request the load generator sent"
    # Not a timing assertion: only a sanity bound so wildly wrong arithmetic fails (a stalled
    # machine only stretches the window, which lowers the rate, and this bound is a fifth of it).
    assert 20 <= report.achieved_rps <= 100.5, report.to_text()
    assert report.percentile_ms(50) <= report.percentile_ms(99), report.to_text()


def test_cli_json_report(server: ThreadServer) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "workloads.loadgen", "--url", server.url, "--rps", "50", "--duration", "0.4", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert (report["sent"], report["ok"], report["errors"]["total"]) == (20, 20, 0), report
    assert set(report["latency_ms"]) == {"p50", "p99", "max"}


@contextlib.asynccontextmanager
async def stub_server(handler):
    """A POST /v1/predict stub on a free local port; yields its base URL."""
    app = web.Application()
    app.router.add_post("/v1/predict", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def test_errors_are_counted_by_status_and_the_cap_drops_requests() -> None:
    """A stub that answers 429 after holding each request: with a cap of 2, most requests are dropped."""

    async def scenario():
        release = asyncio.Event()

        async def handler(request: web.Request) -> web.Response:
            await release.wait()
            return web.json_response({"error": "busy"}, status=429)

        async with stub_server(handler) as url:
            # Held requests free their slots only after 1 s; all 20 come due within 0.2 s.
            asyncio.get_running_loop().call_later(1.0, release.set)
            return await run_load(LoadSpec(url=url, rps=100, duration_s=0.2, concurrency=2))

    report = asyncio.run(scenario())
    assert report.sent + report.dropped == 20, report.to_text()
    assert report.sent >= 2 and report.dropped >= 1, report.to_text()
    assert report.ok == 0 and report.statuses == {"429": report.sent}, report.to_text()
    assert report.to_dict()["errors"]["by_status"] == {"429": report.sent}
    assert "HTTP 429" in report.to_text()


def test_connection_errors_are_reported_not_raised() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and that nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    report = asyncio.run(run_load(LoadSpec(url=f"http://127.0.0.1:{port}", rps=50, duration_s=0.1, timeout_s=5)))
    assert report.sent == 5 and report.ok == 0, report.to_text()
    assert sum(report.connection_errors.values()) == 5, report.to_text()
    assert report.percentile_ms(99) is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rps", "10", "--duration", "1"], "the following arguments are required: --url"),
        (["--url", "127.0.0.1:8080", "--rps", "10", "--duration", "1"], "--url must be an http:// or https:// URL"),
        (["--url", "http://h", "--rps", "0", "--duration", "1"], "--rps must be a number > 0 (got 0.0)"),
        (["--url", "http://h", "--rps", "ten", "--duration", "1"], "argument --rps: invalid float value: 'ten'"),
        (["--url", "http://h", "--rps", "10", "--duration", "-1"], "--duration must be a number > 0 (got -1.0)"),
        (["--url", "http://h", "--rps", "10", "--duration", "1", "--concurrency", "0"], "--concurrency must be"),
        (["--url", "http://h", "--rps", "1e6", "--duration", "10"], "at most 1000000 requests"),
        (["--url", "http://h", "--rps", "0.5", "--duration", "1"], "at least one request"),
        (
            ["--url", "http://h", "--rps", "1", "--duration", "1", "--host-header", "a b"],
            "--host-header must be a host",
        ),
        (
            ["--url", "http://h", "--rps", "1", "--duration", "1", "--arrivals", "fixed"],
            "--arrivals must be one of poisson, uniform (got 'fixed')",
        ),
    ],
)
def test_argument_errors_are_clear(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err, f"expected {message!r} in:\n{err}"


def test_endpoint_defaults_to_the_predict_path() -> None:
    assert LoadSpec(url="http://h:1", rps=1, duration_s=1).endpoint == "http://h:1/v1/predict"
    assert LoadSpec(url="http://h:1/", rps=1, duration_s=1).endpoint == "http://h:1/v1/predict"
    assert LoadSpec(url="http://h:1/x/predict", rps=1, duration_s=1).endpoint == "http://h:1/x/predict"


def test_host_header_reaches_the_server() -> None:
    """Like the KEDA HTTP interceptor, a stub that routes by Host: only `llm.inference` gets a 200."""

    async def scenario():
        async def handler(request: web.Request) -> web.Response:
            return web.json_response({}, status=200 if request.host == "llm.inference" else 404)

        async with stub_server(handler) as url:
            routed = await run_load(LoadSpec(url=url, rps=50, duration_s=0.1, host_header="llm.inference"))
            direct = await run_load(LoadSpec(url=url, rps=50, duration_s=0.1))
            return routed, direct

    routed, direct = asyncio.run(scenario())
    assert routed.ok == 5 and routed.statuses == {"200": 5}, routed.to_text()
    assert direct.ok == 0 and direct.statuses == {"404": 5}, direct.to_text()


def test_arrivals_are_random_by_default_and_uniform_on_request() -> None:
    """Poisson arrivals: exponential gaps (mean 1/rps, standard deviation as large as the mean);
    uniform ones are exactly 1/rps apart, the schedule that phase-locks with a batching server."""
    poisson = LoadSpec(url="http://h:1", rps=500, duration_s=8)
    due = poisson.schedule()
    gaps = [b - a for a, b in itertools.pairwise(due)]
    mean = sum(gaps) / len(gaps)
    deviation = (sum((g - mean) ** 2 for g in gaps) / len(gaps)) ** 0.5
    assert (len(due), due[0]) == (4000, 0.0)
    assert min(gaps) > 0 and abs(mean - 1 / 500) < 0.1 / 500, mean
    assert 0.9 < deviation / mean < 1.1, "exponential gaps: the coefficient of variation is 1"
    assert sum(g < 0.2 / 500 for g in gaps) > 0.1 * len(gaps), "many gaps far below the mean (bursts, as in life)"
    assert due == LoadSpec(url="http://h:1", rps=500, duration_s=8).schedule(), "seeded: the same run twice"
    assert due != LoadSpec(url="http://h:1", rps=500, duration_s=8, seed=1).schedule()
    uniform = LoadSpec(url="http://h:1", rps=500, duration_s=8, arrivals="uniform").schedule()
    assert uniform == [i / 500 for i in range(4000)]
    spec, _ = parse_args(["--url", "http://h", "--rps", "5", "--duration", "1", "--arrivals", "uniform"])
    assert spec.arrivals == "uniform"
    assert parse_args(["--url", "http://h", "--rps", "5", "--duration", "1"])[0].arrivals == "poisson"
