"""The layers import one way, and the contract that says so bites.

`pyproject.toml` [tool.importlinter] holds the contracts (import-linter, run as CI
runs it); the second test plants an upward import in a copy of the packages and
expects the failure to name the layers. No source file patches `sys.path`: the
project is installed (`pip install -e .` in scripts/setup.sh).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tools.plan.run import ROOT

PACKAGES = ("domain", "infra", "policies", "tools", "workloads", "bench")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
MAX_LINES = 600


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} missing: run ./scripts/setup.sh --dev")
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=cwd,
        env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_import_contracts_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"Contracts: (\d+) kept, 0 broken", result.stdout), result.stdout


@pytest.mark.parametrize(
    ("module", "planted", "message"),
    [
        ("domain/contract.py", "import infra.network", "domain is not allowed to import infra"),
        ("workloads/server/metric_names.py", "import domain.contract", "workloads is not allowed to import domain"),
        ("infra/network.py", "import tools.plan.run", "infra is not allowed to import tools"),
        ("policies/rules/common.py", "import infra.helm", "policies is not allowed to import infra"),
    ],
)
def test_an_upward_import_fails_naming_the_layers(tmp_path, module, planted, message):
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{planted}  # planted by the test\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0, result.stdout
    assert message in result.stdout, result.stdout


def sources() -> list[Path]:
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / line for line in tracked.stdout.split() if not line.startswith(("tests/", "charts/"))]


def test_nothing_outside_tests_patches_sys_path():
    patched = [str(p.relative_to(ROOT)) for p in sources() if "sys.path" in p.read_text()]
    assert patched == [], f"these patch sys.path instead of relying on the installed project: {patched}"


def test_no_source_file_is_over_600_lines():
    long = {str(p.relative_to(ROOT)): n for p in sources() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"split these by concern: {long}"
