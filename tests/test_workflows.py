"""The GitHub Actions workflows users get: valid, and wired to files that exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import STACKS

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def load(name: str) -> dict:
    # PyYAML reads the `on:` key as True; normalise it.
    doc = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
    return {("on" if k is True else k): v for k, v in doc.items()}


def test_workflows_exist() -> None:
    assert {p.name for p in WORKFLOWS} == {"preview.yml", "deploy.yml", "up.yml"}


def test_workflows_validate_against_the_github_workflow_schema() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _runs(workflow: dict) -> list[str]:
    return [step.get("run", "") for job in workflow["jobs"].values() for step in job.get("steps", [])]


def test_preview_runs_the_pack_for_every_stack_on_pull_requests() -> None:
    preview = load("preview.yml")
    assert "pull_request" in preview["on"]
    job = preview["jobs"]["preview"]
    assert sorted(job["strategy"]["matrix"]["env"]) == STACKS
    command = " ".join(r for r in _runs({"jobs": {"preview": job}}) if "pulumi preview" in r)
    assert "--policy-pack policies" in command
    assert "--policy-pack-config policies/config/${{ matrix.env }}.json" in command


def test_preview_runs_the_readme_test_command_first() -> None:
    preview = load("preview.yml")
    assert preview["jobs"]["preview"]["needs"] == "test"
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = "./scripts/setup.sh --dev && .venv/bin/python -m pytest"
    assert test_command in _runs(preview) and test_command in ci
    assert test_command in (ROOT / "README.md").read_text()


def test_up_runs_on_main_dev_first_then_prod_behind_its_environment() -> None:
    deploy = load("deploy.yml")
    assert deploy["on"] == {"push": {"branches": ["main"]}}
    jobs = deploy["jobs"]
    assert jobs["up-dev"]["with"]["env"] == "dev" and jobs["up-prod"]["with"]["env"] == "prod"
    assert jobs["up-prod"]["needs"] == "up-dev"
    up = load("up.yml")
    job = up["jobs"]["up"]
    assert job["environment"] == "${{ inputs.env }}"
    command = " ".join(r for r in _runs(up) if "pulumi up" in r)
    assert "--policy-pack policies --policy-pack-config policies/config/${{ inputs.env }}.json" in command


def test_called_workflows_exist() -> None:
    for job in load("deploy.yml")["jobs"].values():
        assert (ROOT / job["uses"].removeprefix("./")).exists(), job["uses"]


@pytest.mark.parametrize("env", STACKS)
def test_every_environment_has_its_policy_config_and_stack_file(env: str) -> None:
    assert (ROOT / "policies" / "config" / f"{env}.json").exists()
    assert (ROOT / f"Pulumi.{env}.yaml").exists()


def test_scripts_the_workflows_call_exist() -> None:
    for workflow in WORKFLOWS:
        for path in re.findall(r"\./(scripts/[\w./-]+)", workflow.read_text()):
            assert (ROOT / path).exists(), f"{workflow.name} calls {path}, which does not exist"
