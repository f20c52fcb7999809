"""The benchmarks run end to end at a trivial load (smoke tests: no numbers are judged)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bench import server_speed
from bench.batching import main, parse_args
from tests.workloads.helpers import ROOT


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


def test_server_speed_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    """The speed benchmark end to end, tiny: today's server (from HEAD), the new one and the
    HTTP ceiling each take load and answer every request; no number is judged."""
    argv = ["--repeats", "1", "--duration", "0.3", "--warmup", "0.1", "--start-rate", "30", "--max-steps", "1"]
    argv += ["--p50-rates", "30", "--p99-ms", "5000", "--variants", "today-b1,new-batched,ceiling-asyncio", "--json"]
    assert server_speed.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["rows"]) == {"today-b1", "new-batched", "ceiling-asyncio"}
    for key, (run,) in result["rows"].items():
        assert len(run["steps"]) == (1 if key.startswith("ceiling") else 2), run
        for step in run["steps"]:
            assert step["sent"] > 0 and step["ok"] == step["sent"] and step["errors"] == 0, (key, step)
    assert result["ort"]["batch32_rows_per_s"] > 0 and result["ort"]["batch1_calls_per_s"] > 0
    assert any("git archive HEAD" in line for line in result["header"])


def test_server_speed_runs_todays_server_as_committed(tmp_path: Path) -> None:
    """The `today` rows run HEAD's server files, not the working tree's."""
    exported = server_speed.export_head(tmp_path / "today")
    for name in ("server/app.py", "server/batcher.py", "model.py"):
        committed = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"HEAD:workloads/{name}"], check=True, capture_output=True
        ).stdout
        assert (exported / "workloads" / name).read_bytes() == committed, name


def test_server_speed_search_steps_up_then_bisects() -> None:
    """A fake server that meets the bound up to 1000 rps: the search climbs by x1.5 from 400,
    then bisects geometrically until the last pass and first failure are within 8 %."""
    offered: list[float] = []

    def measure(rate: float) -> server_speed.Step:
        offered.append(round(rate))
        return server_speed.Step(rate, 10, 10, 0, rate, 1.0, 1.0, rate <= 1000)

    best, steps = server_speed.find_max(measure, 400, 1.5, 10)
    assert offered == [400, 600, 900, 1350, 1102, 996, 1048]
    assert best == pytest.approx(996.0, abs=1) and len(steps) == 7
    offered.clear()
    assert server_speed.find_max(lambda r: server_speed.Step(r, 1, 0, 1, 0, None, None, False), 9, 3, 10)[0] is None
