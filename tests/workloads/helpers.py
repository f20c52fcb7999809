"""Helpers for the workload tests: a server on a background event loop, a model that
blocks until released (so queueing and batching are driven by the test, not by
timing), HTTP calls, and metric scraping.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from workloads.model import Model
from workloads.server.app import InferenceServer
from workloads.server.config import ServerConfig

ROOT = Path(__file__).resolve().parents[2]
# Generous: these bound a hang on a slow machine, they never measure anything.
WAIT_S = 30.0
T = TypeVar("T")


def config(**changes: Any) -> ServerConfig:
    """Defaults for tests: loopback, a free port, the built-in model."""
    return ServerConfig.defaults(host="127.0.0.1", port=0, **changes)


def row(seed: int, size: int = 16) -> list[float]:
    return [round(float(v), 4) for v in np.random.default_rng(seed).uniform(-1, 1, size)]


class GatedModel:
    """Wraps a Model; every call blocks until `release()`, and calls are recorded."""

    def __init__(self, model: Model) -> None:
        self._model = model
        self.input_size, self.output_size, self.provider = model.input_size, model.output_size, model.provider
        self.gate = threading.Event()
        self.batch_sizes: list[int] = []
        self._lock = threading.Lock()

    @property
    def calls(self) -> int:
        with self._lock:
            return len(self.batch_sizes)

    def release(self) -> None:
        self.gate.set()

    def predict_array(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            self.batch_sizes.append(len(batch))
        if not self.gate.wait(WAIT_S):
            raise TimeoutError("the test never released the gated model")
        return self._model.predict_array(batch)


class ThreadServer:
    """An InferenceServer on its own event loop in a daemon thread; a context manager."""

    def __init__(self, cfg: ServerConfig, model: Any = None, loader: Callable[[str | None], Any] | None = None):
        kwargs: dict[str, Any] = {"model": model}
        if loader is not None:
            kwargs["loader"] = loader
        self.server = InferenceServer(cfg, **kwargs)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-server", daemon=True)
        self.url = ""

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(WAIT_S)

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
        """Start `coro` on the server's loop; returns a concurrent future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[return-value]

    def start(self, wait_loaded: bool = True) -> ThreadServer:
        self._thread.start()
        self.url = self.call(self.server.start())
        if wait_loaded:
            self.call(self.server.wait_loaded())
        return self

    def __enter__(self) -> ThreadServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        try:
            self.call(self.server.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(WAIT_S)
            self.loop.close()


async def post(
    session: aiohttp.ClientSession, url: str, payload: Any = None, *, data: Any = None
) -> tuple[int, dict[str, str], Any]:
    """POST JSON (or raw `data`); returns (status, headers, parsed JSON body or text)."""
    body = data if data is not None else json.dumps(payload).encode()
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
        text = await resp.text()
        try:
            parsed: Any = json.loads(text)
        except ValueError:
            parsed = text
        return resp.status, dict(resp.headers), parsed


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as resp:
        return resp.status, await resp.text()


def run(coro_fn: Callable[[aiohttp.ClientSession], Awaitable[T]]) -> T:
    """Run `coro_fn(session)` on a fresh loop in this thread, with a client session."""

    async def main() -> T:
        timeout = aiohttp.ClientTimeout(total=WAIT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            return await coro_fn(session)

    return asyncio.run(main())


def samples(exposition: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} from a Prometheus text exposition."""
    found = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def sample(exposition: str, name: str, **labels: str) -> float | None:
    return samples(exposition).get((name, tuple(sorted(labels.items()))))


async def scrape(session: aiohttp.ClientSession, base_url: str) -> str:
    status, text = await get(session, base_url + "/metrics")
    assert status == 200, f"GET /metrics: expected 200, got {status}: {text[:200]}"
    return text


async def wait_until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {WAIT_S}s waiting for {what}")
        await asyncio.sleep(0.01)


async def wait_for_metric(session: aiohttp.ClientSession, base_url: str, name: str, value: float) -> None:
    async def check() -> bool:
        return sample(await scrape(session, base_url), name) == value

    await wait_until(check, f"{name} == {value}")


class ServerProcess:
    """`python -m workloads.server` as a subprocess on 127.0.0.1 with a free port; logs go to a file."""

    def __init__(self, log_path: Path, env: dict[str, str] | None = None, args: list[str] | None = None) -> None:
        self.log_path = log_path
        full_env = {**os.environ, "HOST": "127.0.0.1", "PORT": "0", **(env or {})}
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "workloads.server", *(args or [])],
            cwd=ROOT,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.url = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_listening(self) -> str:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            found = re.search(r"listening on (http://\S+)", self.log())
            if found:
                self.url = found.group(1)
                return self.url
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode} before listening:\n{self.log()}")
            time.sleep(0.02)
        raise AssertionError(f"server did not print its address within {WAIT_S}s:\n{self.log()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(WAIT_S)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._log.close()


def host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


async def connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw TCP connection to the server at `url`: for requests no HTTP client would send."""
    return await asyncio.open_connection(*host_port(url))


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes] | None:
    """One HTTP/1.1 response (status, headers lower-cased, body by Content-Length), or None when
    the server closed the connection without sending one. Bounded by WAIT_S."""

    async def read() -> tuple[int, dict[str, str], bytes] | None:
        status_line = await reader.readline()
        if not status_line:
            return None
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return int(status_line.split()[1]), headers, body

    return await asyncio.wait_for(read(), WAIT_S)


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """Whether the server closes the connection (EOF or reset) within WAIT_S; reads what is left."""
    try:
        while await asyncio.wait_for(reader.read(65536), WAIT_S):
            pass
    except ConnectionError:
        pass
    except TimeoutError:
        return False
    return True
