"""A real Prometheus server for tests: loopback, a free port, a throwaway data dir.

    with PrometheusServer([Target("127.0.0.1:8000", {"namespace": "inference", "service": "s"})]) as prom:
        prom.wait_for('inference_requests_in_flight{service="s"}')
        prom.query("sum(inference_requests_in_flight)")    # -> [Sample(labels={}, value=3.0)]

The config is generated: one scrape job per (job, metrics path), one static
config per target with its extra labels, so scraped series carry
`namespace`/`service`/`pod` the way a ServiceMonitor would add them. Rule files
can be loaded too. The binaries come from Debian's `prometheus` package
(`scripts/install-prometheus.sh`); without them tests skip with `SKIP_REASON`,
unless `GPUINF_REQUIRE_TOOLS=1` (CI sets it): then each of those skips is a
failure, so a runner that lost the binaries cannot pass by skipping.

Only the standard library is used to talk to the server (`/-/ready`,
`/api/v1/query`, any other `/api/v1/...` path through `api`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import yaml

if TYPE_CHECKING:  # bench/ imports this module too, without pytest
    import pytest

SKIP_REASON = "prometheus not installed: run scripts/install-prometheus.sh (Debian package prometheus)"
REQUIRE_TOOLS_ENV = "GPUINF_REQUIRE_TOOLS"

QueryResult = float | str | list["Sample"] | list["RangeSeries"]


def prometheus_binary() -> str | None:
    """Path of the `prometheus` server binary, or None when it is not installed."""
    return shutil.which("prometheus")


def promtool_binary() -> str | None:
    """Path of `promtool`, or None when it is not installed."""
    return shutil.which("promtool")


def tools_required() -> bool:
    """True when `GPUINF_REQUIRE_TOOLS=1`: a missing prometheus/promtool fails the tests that need it."""
    return os.environ.get(REQUIRE_TOOLS_ENV, "") == "1"


def fail_required_skip(report: pytest.TestReport) -> None:
    """Turn a report skipped for SKIP_REASON into a failure under GPUINF_REQUIRE_TOOLS=1.

    For the conftests' `pytest_runtest_makereport`: one place that catches both the
    `skipif(..., reason=SKIP_REASON)` markers of the test modules and `pytest.skip(SKIP_REASON)`
    in fixtures, so a new test that skips the usual way is covered too.
    """
    if report.skipped and tools_required() and SKIP_REASON in str(report.longrepr):
        report.outcome = "failed"
        report.longrepr = f"{REQUIRE_TOOLS_ENV}=1 but {SKIP_REASON}"


@dataclass(frozen=True)
class Target:
    """A scrape target (`host:port`) and the labels Prometheus adds to everything scraped from it."""

    address: str
    labels: Mapping[str, str] = field(default_factory=dict)
    job: str = "test"
    metrics_path: str = "/metrics"
    # True keeps the scraped series' own labels where they clash with `labels` (kube-state-metrics is
    # scraped so); False, Prometheus' default, renames theirs to `exported_<name>`.
    honor_labels: bool = False


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class RangeSeries:
    labels: dict[str, str]
    values: list[tuple[float, float]]


class PrometheusError(RuntimeError):
    """The server failed to start, or the API answered with an error."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _result(data: dict[str, Any]) -> QueryResult:
    kind, result = data["resultType"], data["result"]
    if kind == "scalar":
        return float(result[1])
    if kind == "string":
        return str(result[1])
    if kind == "vector":
        return [Sample(dict(s["metric"]), float(s["value"][1])) for s in result]
    return [RangeSeries(dict(s["metric"]), [(float(t), float(v)) for t, v in s["values"]]) for s in result]


class PrometheusServer:
    """One Prometheus process; `start()`/`stop()` or use it as a context manager."""

    def __init__(
        self,
        targets: Sequence[Target] = (),
        *,
        scrape_interval: str = "1s",
        evaluation_interval: str = "1s",
        rule_files: Sequence[Path] = (),
        binary: str | None = None,
        startup_timeout_s: float = 30.0,
    ) -> None:
        self.targets = tuple(targets)
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval
        self.rule_files = tuple(Path(p).resolve() for p in rule_files)
        self.binary = binary or prometheus_binary()
        self.startup_timeout_s = startup_timeout_s
        self.port: int | None = None
        self.log_text = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise PrometheusError("Prometheus is not running")
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        """The Prometheus configuration this server runs with."""
        jobs: dict[str, dict[str, Any]] = {}
        for target in self.targets:
            # `__metrics_path__` as a target label sets the path per target, so the
            # targets of one job (one label `job`) can be served from different paths.
            labels = {**target.labels, "__metrics_path__": target.metrics_path}
            job = jobs.setdefault(
                target.job, {"job_name": target.job, "honor_labels": target.honor_labels, "static_configs": []}
            )
            if job["honor_labels"] != target.honor_labels:
                raise ValueError(f"targets of job {target.job!r} differ in honor_labels")
            job["static_configs"].append({"targets": [target.address], "labels": labels})
        return {
            "global": {
                "scrape_interval": self.scrape_interval,
                # Never longer than the interval: Prometheus refuses that.
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.evaluation_interval,
            },
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [jobs[name] for name in sorted(jobs)],
        }

    def start(self) -> Self:
        if self.binary is None:
            raise PrometheusError(SKIP_REASON)
        if self._proc is not None:
            raise PrometheusError("Prometheus is already running")
        self._dir = Path(tempfile.mkdtemp(prefix="prometheus-test-"))
        config_file = self._dir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        # A port picked here can be taken before the server binds it: try a few.
        last_error = ""
        for _ in range(3):
            self.port = free_port()
            try:
                self._launch(config_file)
                return self
            except PrometheusError as error:
                last_error = str(error)
                self._terminate()
                if "address already in use" not in last_error:
                    break
        self.stop()
        raise PrometheusError(last_error)

    def _launch(self, config_file: Path) -> None:
        assert self._dir is not None and self.binary is not None
        log = (self._dir / "prometheus.log").open("wb")
        data = self._dir / f"data-{self.port}"
        self._proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={data}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise PrometheusError(f"prometheus exited with {self._proc.returncode}:\n{self._read_log()}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                if response.status == 200:
                    return
            time.sleep(0.05)
        raise PrometheusError(f"prometheus not ready after {self.startup_timeout_s:g}s:\n{self._read_log()}")

    def _read_log(self) -> str:
        if self._dir is None:
            return self.log_text
        path = self._dir / "prometheus.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def stop(self) -> None:
        """Terminate the server (kill it if it lingers) and remove its files; safe to call twice."""
        self._terminate()
        if self._dir is not None:
            self.log_text = self._read_log()
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        self.port = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def api(self, path: str, **params: str) -> Any:
        """GET `/api/v1/<path>` and return its `data`; an error answer raises PrometheusError with its message."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:
            try:
                body = json.load(error)
            except ValueError:
                raise PrometheusError(f"GET {url}: HTTP {error.code}") from error
        if body.get("status") != "success":
            raise PrometheusError(f"{body.get('errorType', 'error')}: {body.get('error', body)}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> QueryResult:
        """Evaluate `expr` now (or at `at`, a Unix time): a float for a scalar, samples for a vector."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return _result(self.api("query", **params))

    def wait_for(
        self,
        expr: str,
        predicate: Callable[[QueryResult], bool] = bool,
        timeout_s: float = 15.0,
    ) -> QueryResult:
        """Query `expr` until `predicate(result)` holds; return that result, or raise after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        result: QueryResult = []
        while time.monotonic() < deadline:
            result = self.query(expr)
            if predicate(result):
                return result
            time.sleep(0.1)
        raise PrometheusError(f"{expr!r} did not satisfy the condition within {timeout_s:g}s; last result: {result}")

    def targets_health(self) -> list[dict[str, Any]]:
        """Active targets as `/api/v1/targets` reports them (labels, health, lastError)."""
        return self.api("targets")["activeTargets"]


@contextlib.contextmanager
def running_prometheus(
    targets: Sequence[Target] = (),
    *,
    scrape_interval: str = "1s",
    evaluation_interval: str = "1s",
    rule_files: Sequence[Path] = (),
) -> Iterator[PrometheusServer]:
    """A started server for a `with` block or a yield fixture; stopped and cleaned up on exit."""
    server = PrometheusServer(
        targets, scrape_interval=scrape_interval, evaluation_interval=evaluation_interval, rule_files=rule_files
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
