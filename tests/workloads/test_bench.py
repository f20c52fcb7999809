"""The benchmarks run end to end at a trivial load (smoke tests: no numbers are judged)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import processes, server_speed
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
    """The speed benchmark end to end, tiny: the baseline's server (ab505c1), the new one and the
    HTTP ceiling each take load and answer every request; no number is judged."""
    argv = ["--repeats", "1", "--duration", "0.3", "--warmup", "0.1", "--start-rate", "30", "--max-steps", "1"]
    argv += ["--p50-rates", "30", "--p99-ms", "5000", "--variants", "today-b1,new-batched,ceiling-asyncio", "--json"]
    argv += ["--nice", "1", "--cpu-rate", "30", "--cpu-seconds", "0.5"]
    assert server_speed.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["rows"]) == {"today-b1", "new-batched", "ceiling-asyncio"}
    for key, (run,) in result["rows"].items():
        # the search's step, the p50 step (servers), the server-CPU-per-request step
        assert len(run["steps"]) == (2 if key.startswith("ceiling") else 3), run
        # Measured (a number); in this tiny mode it may round to 0: /proc counts CPU in 10 ms ticks.
        assert run["cpu_us"] is not None and run["cpu_us"] >= 0, (key, run["cpu_us"])
        for step in run["steps"]:
            assert step["sent"] > 0 and step["ok"] == step["sent"] and step["errors"] == 0, (key, step)
    assert result["ort"]["batch32_rows_per_s"] > 0 and result["ort"]["batch1_calls_per_s"] > 0
    assert any("git archive ab505c1" in line for line in result["header"])
    assert any("servers at nice +1" in line for line in result["header"])


def test_server_speed_runs_the_baseline_server_as_committed(tmp_path: Path) -> None:
    """The `today` rows run the --baseline commit's server files (ab505c1 by default), not the
    working tree's, and that server reads every knob the benchmark sets."""
    assert server_speed.parse_args([]).baseline == "ab505c1"
    exported = server_speed.export_ref(tmp_path / "today", "ab505c1")
    for name in ("server/app.py", "server/batcher.py", "server/config.py", "model.py"):
        committed = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"ab505c1:workloads/{name}"], check=True, capture_output=True
        ).stdout
        assert (exported / "workloads" / name).read_bytes() == committed, name
    assert not (exported / "workloads" / "server" / "fast.py").exists(), "the lean path came after ab505c1"
    knobs = ["HOST", "PORT", "MODEL_PATH", "MAX_BATCH_SIZE", "MAX_WAIT_MS", "EXTRA_BATCH_LATENCY_MS"]
    assert server_speed.missing_knobs(exported, knobs) == []
    assert server_speed.missing_knobs(exported, ["MAX_BATCH_SIZE", "NO_SUCH_KNOB"]) == ["NO_SUCH_KNOB"]


def test_server_speed_refuses_an_unknown_baseline(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--baseline", "no-such-ref", "--variants", "today-b1", "--repeats", "1"]
    assert server_speed.main(argv) == 2
    assert "--baseline 'no-such-ref' is not a commit of" in capsys.readouterr().err


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


def test_server_processes_start_pinned_and_niced(tmp_path: Path) -> None:
    """start_process pins the child to the core and adds --nice's niceness to it."""
    script = "import os; print('listening on http://127.0.0.1:1', os.sched_getaffinity(0), os.nice(0), flush=True)"
    core = sorted(os.sched_getaffinity(0))[0]
    proc, url = processes.start_process([sys.executable, "-c", script], tmp_path, {}, core, tmp_path / "log", nice=3)
    proc.wait(30)
    assert url == "http://127.0.0.1:1"
    assert (tmp_path / "log").read_text().split()[-2:] == [f"{{{core}}}", str(os.nice(0) + 3)]


def test_process_cpu_seconds_counts_the_process_own_cpu_time() -> None:
    """The CPU-per-request column reads /proc/<pid>/stat: a child that burns CPU shows it, one that
    sleeps does not (no timing is judged: only which of the two spent more)."""
    burn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nt=time.process_time()\nwhile time.process_time()-t<0.3: pass\nimport sys; sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
    )
    idle = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while server_speed.process_cpu_seconds(burn.pid) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server_speed.process_cpu_seconds(burn.pid) >= 0.3
        assert server_speed.process_cpu_seconds(idle.pid) < server_speed.process_cpu_seconds(burn.pid)
    finally:
        for proc in (burn, idle):
            proc.communicate(b"")
