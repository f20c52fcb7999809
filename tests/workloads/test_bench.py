"""The batching benchmark runs end to end at a trivial load (a smoke test: no numbers are judged)."""

from __future__ import annotations

import json

import pytest

from bench.batching import main, parse_args


def test_bench_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--rps", "20", "--duration", "0.2", "--warmup", "0.1", "--model-hidden", "64", "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["max_batch_size"] for r in result["runs"]] == [32, 1]
    for run in result["runs"]:
        assert (run["sent"], run["ok"], run["errors"]["total"]) == (4, 4, 0), run
    assert any("a sleep, not compute" in line for line in result["header"]), "the output says what is emulated"


def test_bench_argument_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(["--model-hidden", "0"])
    assert exited.value.code == 2
    assert "--model-hidden must be > 0 (got 0)" in capsys.readouterr().err
