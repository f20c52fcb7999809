"""`python -m workloads.server` as a real process: settings errors, a failed model load, and SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.workloads.helpers import ROOT, WAIT_S, ServerProcess, get, post, row, run, sample, scrape, wait_until
from workloads.server.app import CLOSE_TIMEOUT_S, PREDICT_PATH
from workloads.server.config import ServerConfig
from workloads.server.metric_names import IN_FLIGHT, REQUESTS_TOTAL


async def until_ready(session: aiohttp.ClientSession, url: str) -> None:
    async def ready() -> bool:
        return (await get(session, url + "/readyz"))[0] == 200

    await wait_until(ready, "the model to load")


def send(session: aiohttp.ClientSession, url: str, n: int) -> list[asyncio.Task]:
    """n concurrent predictions on one session (n keep-alive connections)."""
    return [asyncio.create_task(post(session, url + PREDICT_PATH, {"inputs": [row(i)]})) for i in range(n)]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workloads.server", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--max-batch-size", "0"], {}, "--max-batch-size must be an integer >= 1 (got '0')"),
        ([], {"MAX_QUEUE": "lots"}, "MAX_QUEUE must be an integer >= 1 (got 'lots')"),
        ([], {"MAX_WAIT_MS": "-1"}, "MAX_WAIT_MS must be a number >= 0 (got '-1')"),
        ([], {"PORT": "70000"}, "PORT must be a port number 0-65535, 0 picks a free port (got '70000')"),
        ([], {"KEEPALIVE_DRAIN_S": "-1"}, "KEEPALIVE_DRAIN_S must be a number >= 0 (got '-1')"),
        ([], {"HEADER_TIMEOUT_S": "0"}, "HEADER_TIMEOUT_S must be a number > 0 (got '0')"),
        ([], {"BODY_TIMEOUT_S": "soon"}, "BODY_TIMEOUT_S must be a number > 0 (got 'soon')"),
        (["--body-timeout-s", "inf"], {}, "--body-timeout-s must be a number > 0 (got 'inf')"),
        ([], {"BACKLOG": "0"}, "BACKLOG must be an integer >= 1 (got '0')"),
    ],
)
def test_bad_settings_exit_2_with_the_setting_named(args: list[str], env: dict[str, str], message: str) -> None:
    proc = cli(*args, env=env)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr, f"expected {message!r} in:\n{proc.stderr}"


def test_flags_override_the_environment() -> None:
    cfg = ServerConfig.from_sources({"MAX_BATCH_SIZE": "8", "PORT": "9000"}, {"max_batch_size": "16"})
    assert (cfg.max_batch_size, cfg.port, cfg.max_queue) == (16, 9000, 128)


def test_connection_defaults() -> None:
    """Timeouts a slow client must meet, and a backlog that holds a burst of 1,000 connections."""
    cfg = ServerConfig.defaults()
    assert (cfg.header_timeout_s, cfg.body_timeout_s, cfg.backlog) == (10, 30, 2048)
    cfg = ServerConfig.from_sources({"HEADER_TIMEOUT_S": "2.5", "BODY_TIMEOUT_S": "5", "BACKLOG": "4096"})
    assert (cfg.header_timeout_s, cfg.body_timeout_s, cfg.backlog) == (2.5, 5, 4096)


def test_missing_model_file_exits_1(tmp_path: Path) -> None:
    proc = cli(env={"HOST": "127.0.0.1", "PORT": "0", "MODEL_PATH": str(tmp_path / "missing.onnx")})
    assert proc.returncode == 1, proc.stderr
    assert "model load failed" in proc.stderr


def test_sigterm_drains_every_request_then_exits_0(tmp_path: Path) -> None:
    """N requests in flight (slow batches of 2), SIGTERM: readiness drops, all N get 200, exit 0."""
    n = 6
    server = ServerProcess(
        tmp_path / "server.log",
        env={"EXTRA_BATCH_LATENCY_MS": "300", "MAX_BATCH_SIZE": "2", "MAX_WAIT_MS": "0", "TERM_GRACE_S": "0"},
    )
    try:
        url = server.wait_listening()

        async def scenario(session: aiohttp.ClientSession):
            await until_ready(session, url)
            requests = send(session, url, n)

            async def all_accepted() -> bool:
                text = await scrape(session, url)
                return (sample(text, IN_FLIGHT) or 0) + (sample(text, REQUESTS_TOTAL, status="200") or 0) == n

            await wait_until(all_accepted, f"all {n} requests to be accepted")
            in_flight_at_sigterm = sample(await scrape(session, url), IN_FLIGHT)
            server.proc.send_signal(signal.SIGTERM)
            after = await _probe_after_sigterm(session, url)
            return in_flight_at_sigterm, after, await asyncio.gather(*requests)

        in_flight_at_sigterm, after, answers = run(scenario)
        exit_code = server.proc.wait(WAIT_S)
    finally:
        server.stop()
    log = server.log()
    assert in_flight_at_sigterm and in_flight_at_sigterm > 0, f"nothing was in flight at SIGTERM:\n{log}"
    readyz, refused = after
    assert readyz in (503, "refused"), f"/readyz after SIGTERM: expected 503 or a closed port, got {readyz}"
    assert refused in (503, "refused"), f"a new request after SIGTERM: expected 503 or a closed port, got {refused}"
    assert [a[0] for a in answers] == [200] * n, f"requests lost in the drain: {answers}\n{log}"
    assert exit_code == 0, log
    assert "SIGTERM received" in log and "every accepted request was answered" in log, log


async def _probe_after_sigterm(session: aiohttp.ClientSession, url: str) -> tuple[object, object]:
    """(/readyz status, new predict status), each 'refused' once the server has closed its port."""

    async def status(call) -> object:
        try:
            return (await call)[0]
        except aiohttp.ClientConnectionError:
            return "refused"

    # Readiness flips inside the signal handler; give the signal a moment to arrive.
    async def not_ready() -> bool:
        return await status(get(session, url + "/readyz")) != 200

    await wait_until(not_ready, "/readyz to stop answering 200 after SIGTERM")
    readyz = await status(get(session, url + "/readyz"))
    refused = await status(post(session, url + PREDICT_PATH, {"inputs": [row(99)]}))
    return readyz, refused


def test_sigterm_waits_for_work_longer_than_the_listeners_close_grace(tmp_path: Path) -> None:
    """The drain, not aiohttp's shutdown grace, is what keeps accepted requests alive.

    Closing the listener waits at most 2 x CLOSE_TIMEOUT_S for running handlers (aiohttp
    waits once, cancels the request, waits again). The batch in flight at SIGTERM here runs
    longer than that, so its requests get their 200 only if the drain waits for them, with
    the listener still open: readiness 503, and new requests a clean 503 meanwhile.
    """
    n = 8
    batch_ms = int((2 * CLOSE_TIMEOUT_S + 1.5) * 1000)
    env = {"EXTRA_BATCH_LATENCY_MS": str(batch_ms), "MAX_BATCH_SIZE": str(n), "MAX_WAIT_MS": "250"}
    server = ServerProcess(tmp_path / "server.log", env={**env, "TERM_GRACE_S": "0", "DRAIN_TIMEOUT_S": "60"})
    try:
        url = server.wait_listening()

        async def scenario(session: aiohttp.ClientSession):
            await until_ready(session, url)
            requests = send(session, url, n)

            async def all_in_flight() -> bool:
                return sample(await scrape(session, url), IN_FLIGHT) == n

            await wait_until(all_in_flight, f"all {n} requests to be in flight")
            server.proc.send_signal(signal.SIGTERM)

            async def not_ready() -> bool:
                return (await get(session, url + "/readyz"))[0] != 200

            await wait_until(not_ready, "/readyz to stop answering 200 after SIGTERM")
            readyz = await get(session, url + "/readyz")
            refused = await post(session, url + PREDICT_PATH, {"inputs": [row(99)]})
            return readyz, refused, await asyncio.gather(*requests)

        readyz, refused, answers = run(scenario)
        exit_code = server.proc.wait(WAIT_S)
    finally:
        server.stop()
    log = server.log()
    assert readyz == (503, '{"status": "draining"}'), f"/readyz during the drain: {readyz}\n{log}"
    assert refused[0] == 503 and "shutting down" in refused[2]["error"], f"a new request during the drain: {refused}"
    assert refused[1].get("Connection", "").lower() == "close"
    assert [a[0] for a in answers] == [200] * n, f"accepted requests not answered 200: {answers}\n{log}"
    # Answered during the drain: keep-alive clients are told to reconnect (to a pod that stays).
    assert all(a[1].get("Connection", "").lower() == "close" for a in answers), [a[1] for a in answers]
    assert exit_code == 0, log
    assert "every accepted request was answered" in log, log


def test_idle_server_exits_0_on_sigterm(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server.log")
    try:
        url = server.wait_listening()

        run(lambda session: until_ready(session, url))
    finally:
        code = server.stop()
    assert code == 0, server.log()


def test_metric_names_import_without_the_server_stack() -> None:
    """The Pulumi program and dashboards import the names; that must not need aiohttp, NumPy or ONNX Runtime."""
    heavy = ("aiohttp", "numpy", "onnxruntime", "prometheus_client")
    code = f"import sys, workloads.server.metric_names; print([m for m in {heavy!r} if m in sys.modules])"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=WAIT_S)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", f"importing metric_names loaded {proc.stdout.strip()}"
