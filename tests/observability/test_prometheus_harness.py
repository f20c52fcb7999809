"""The Prometheus test harness itself: config generation, scraping with target labels, queries, stop."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from tests.support.prometheus import (
    SKIP_REASON,
    PrometheusError,
    PrometheusServer,
    Sample,
    Target,
    free_port,
    prometheus_binary,
    running_prometheus,
)

needs_prometheus = pytest.mark.skipif(prometheus_binary() is None, reason=SKIP_REASON)
POD_LABELS = {"namespace": "inference", "service": "echo", "pod": "echo-0"}


def test_config_has_one_job_per_name_and_target_labels() -> None:
    server = PrometheusServer(
        [
            Target("127.0.0.1:1", POD_LABELS, job="echo", metrics_path="/a"),
            Target("127.0.0.1:2", {"pod": "echo-1"}, job="echo", metrics_path="/b"),
            Target("127.0.0.1:3", job="ksm", honor_labels=True),
        ],
        scrape_interval="2s",
        evaluation_interval="3s",
    )
    config = server.config()
    assert config["global"] == {"scrape_interval": "2s", "scrape_timeout": "2s", "evaluation_interval": "3s"}
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert sorted(jobs) == ["echo", "ksm"]
    assert jobs["ksm"]["honor_labels"] is True
    assert jobs["echo"]["static_configs"] == [
        {"targets": ["127.0.0.1:1"], "labels": {**POD_LABELS, "__metrics_path__": "/a"}},
        {"targets": ["127.0.0.1:2"], "labels": {"pod": "echo-1", "__metrics_path__": "/b"}},
    ]


def test_config_rejects_a_job_with_mixed_honor_labels() -> None:
    server = PrometheusServer([Target("127.0.0.1:1", job="x"), Target("127.0.0.1:2", job="x", honor_labels=True)])
    with pytest.raises(ValueError, match="targets of job 'x' differ in honor_labels"):
        server.config()


def test_start_without_binary_raises_the_skip_reason() -> None:
    server = PrometheusServer(binary=None)
    server.binary = None
    with pytest.raises(PrometheusError, match="prometheus not installed"):
        server.start()


@pytest.fixture
def exporter() -> Iterator[tuple[str, Gauge]]:
    """A prometheus-client HTTP server on loopback exposing one gauge."""
    registry = CollectorRegistry()
    gauge = Gauge("harness_test_value", "A value set by the test.", ["kind"], registry=registry)
    port = free_port()
    httpd, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield f"127.0.0.1:{port}", gauge
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@needs_prometheus
def test_scrapes_a_client_with_target_labels_and_answers_queries(exporter: tuple[str, Gauge]) -> None:
    address, gauge = exporter
    gauge.labels(kind="answer").set(42)
    with running_prometheus([Target(address, POD_LABELS, job="echo")], scrape_interval="1s") as prom:
        found = prom.wait_for('harness_test_value{kind="answer"}')
        assert isinstance(found, list) and len(found) == 1, f"expected one series, found {found}"
        sample = found[0]
        assert sample.value == 42.0
        expected = {**POD_LABELS, "job": "echo", "instance": address, "kind": "answer"}
        assert {k: sample.labels.get(k) for k in expected} == expected, f"labels of the scraped series: {sample.labels}"
        assert "__metrics_path__" not in sample.labels

        assert prom.query("1 + 1") == 2.0
        assert prom.query('sum by (service) (harness_test_value{namespace="inference"})') == [
            Sample({"service": "echo"}, 42.0)
        ]
        gauge.labels(kind="answer").set(7)
        prom.wait_for("harness_test_value", lambda r: r[0].value == 7.0)  # type: ignore[index,union-attr]
        health = prom.targets_health()
        assert [t["health"] for t in health] == ["up"], f"targets: {health}"

        with pytest.raises(PrometheusError, match="parse error"):
            prom.query("sum(")
        url = prom.url
    with pytest.raises(PrometheusError, match="not running"):
        prom.url  # noqa: B018
    assert url.startswith("http://127.0.0.1:")


@needs_prometheus
def test_stop_removes_the_data_dir_and_keeps_the_log() -> None:
    prom = PrometheusServer().start()
    workdir = prom._dir
    assert workdir is not None and workdir.exists()
    prom.stop()
    prom.stop()  # idempotent
    assert not workdir.exists()
    assert prom.port is None


@needs_prometheus
def test_a_bad_config_fails_start_with_the_servers_log() -> None:
    server = PrometheusServer([Target("127.0.0.1:1")], scrape_interval="not-a-duration")
    with pytest.raises(PrometheusError, match="not-a-duration"):
        server.start()
    assert server.port is None
