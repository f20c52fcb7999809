"""GPUINF_REQUIRE_TOOLS=1 turns every "prometheus not installed" skip into a failure.

Runs the prometheus-dependent test modules in a child pytest whose PATH has every
program of this one's except prometheus and promtool (whether or not this machine
has them): once as a developer would (they skip), once as CI does (they fail, and
none skips). Outcomes are read from the child's JUnit XML, per test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from tests.support.prometheus import REQUIRE_TOOLS_ENV, SKIP_REASON
from tests.workloads.helpers import ROOT

# Every module with a test that needs prometheus or promtool (not this file: it would recurse).
MODULES = ["tests/observability", "tests/e2e/test_metrics_path.py"]
AT_LEAST = 14  # the tests that needed the binaries when this was written
HIDDEN = {"prometheus", "promtool"}


def path_without_tools(tmp_path: Path) -> str:
    """A PATH of one directory linking every program on this PATH but prometheus and promtool."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for directory in reversed(os.environ.get("PATH", "").split(os.pathsep)):
        if not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            if entry.name not in HIDDEN and os.access(entry.path, os.X_OK):
                link = bin_dir / entry.name
                link.unlink(missing_ok=True)  # earlier PATH entries win, as in a shell
                link.symlink_to(entry.path)
    return str(bin_dir)


def outcomes(tmp_path: Path, required: bool) -> Counter[str]:
    """The child's tests by outcome: `skipped-for-tools`, `failed-for-tools`, or other outcomes."""
    env = {k: v for k, v in os.environ.items() if k != REQUIRE_TOOLS_ENV}
    env["PATH"] = path_without_tools(tmp_path)
    if required:
        env[REQUIRE_TOOLS_ENV] = "1"
    report = tmp_path / "report.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", *MODULES],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.exists(), proc.stdout + proc.stderr
    found: Counter[str] = Counter()
    for case in ET.parse(report).iter("testcase"):
        results = [child for child in case if child.tag in ("skipped", "failure", "error")]
        if not results:
            found["passed"] += 1
            continue
        text = " ".join((r.get("message") or "") + (r.text or "") for r in results)
        tag = results[0].tag
        if SKIP_REASON in text:
            found[f"{'skipped' if tag == 'skipped' else 'failed'}-for-tools"] += 1
        else:
            found[tag] += 1
    return found


def test_without_the_variable_missing_tools_skip(tmp_path: Path) -> None:
    found = outcomes(tmp_path, required=False)
    assert found["skipped-for-tools"] >= AT_LEAST and found["failed-for-tools"] == 0, found


def test_with_the_variable_missing_tools_fail(tmp_path: Path) -> None:
    found = outcomes(tmp_path, required=True)
    assert found["skipped-for-tools"] == 0, f"tests still skipped under {REQUIRE_TOOLS_ENV}=1: {found}"
    assert found["failed-for-tools"] >= AT_LEAST, found
