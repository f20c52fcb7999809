"""Starting a server process for a benchmark, waiting until it listens (and is ready), stopping
it; and exporting an older commit's `workloads` package to run it side by side with the tree."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tarfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable
from pathlib import Path

START_TIMEOUT_S = 60.0
ROOT = Path(__file__).resolve().parents[1]


def wait_listening(proc: subprocess.Popen[bytes], log_path: Path, what: str) -> str:
    """The URL the server logs (`listening on http://...`); kills it and raises if it never does."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        found = re.search(r"listening on (http://\S+)", log_path.read_text(errors="replace"))
        if found:
            return found.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{what} did not start:\n{log_path.read_text(errors='replace')}")


def start_process(
    argv: list[str], cwd: Path, env: dict[str, str], core: int, log_path: Path, nice: int = 0
) -> tuple[subprocess.Popen[bytes], str]:
    """`argv` pinned to CPU `core` (at niceness `nice` more than ours: below 0 needs root or
    CAP_SYS_NICE), its output in `log_path`; returns it and the URL it listens on."""

    def setup() -> None:
        os.sched_setaffinity(0, {core})
        if nice:
            os.nice(nice)

    log = open(log_path, "wb")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=setup,
    )
    log.close()
    return proc, wait_listening(proc, log_path, str(argv))


def wait_ready(url: str, proc: subprocess.Popen[bytes] | None = None, log_path: Path | None = None) -> None:
    """Until `url` answers 200 (a bare server URL: its /readyz), or fail; with `proc`, fail as soon
    as it exits, with the end of its log."""
    probe = url if urllib.parse.urlsplit(url).path not in ("", "/") else url.rstrip("/") + "/readyz"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(probe, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    tail = f":\n{log_path.read_text(errors='replace')[-4000:]}" if log_path is not None else ""
    raise RuntimeError(f"{probe} never became ready{tail}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def export_ref(dest: Path, ref: str = "HEAD") -> Path:
    """The `workloads` package of commit `ref` as files under `dest`, via `git archive` (read-only:
    the repository and its work tree are untouched). Raises ValueError naming a ref git does not know."""
    found = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if found.returncode != 0:
        raise ValueError(f"--baseline {ref!r} is not a commit of {ROOT}")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", found.stdout.strip(), "workloads"],
        check=True,
        capture_output=True,
    ).stdout
    dest.mkdir(parents=True, exist_ok=True)
    tar_path = dest / "ref.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(dest, filter="data")
    return dest


def missing_knobs(tree: Path, names: Iterable[str]) -> list[str]:
    """The environment variables in `names` that the server exported under `tree` does not read
    (its `workloads/server/config.py` declares each setting as `Setting("NAME", ...)`, as it has
    since the server was first written, ab505c1 included)."""
    config = tree / "workloads" / "server" / "config.py"
    text = config.read_text() if config.exists() else ""
    return [name for name in names if not re.search(rf'Setting\(\s*"{re.escape(name)}"', text)]
