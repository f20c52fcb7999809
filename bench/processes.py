"""Starting a server process for a benchmark and waiting until it listens."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

START_TIMEOUT_S = 60.0


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
