"""The GitHub Actions workflows users get: valid, and wired to files that exist."""

from __future__ import annotations

import json
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
    assert sorted(evaluate(job["strategy"]["matrix"]["env"], SAME_REPO_PR)) == STACKS
    command = " ".join(r for r in _runs({"jobs": {"preview": job}}) if "pulumi preview" in r)
    assert "--policy-pack policies" in command
    assert "--policy-pack-config policies/config/${{ matrix.env }}.json" in command


def test_pull_requests_from_forks_preview_dev_only() -> None:
    """The prod runner is inside prod's network: code from a fork must not run there."""
    job = load("preview.yml")["jobs"]["preview"]
    assert evaluate(job["strategy"]["matrix"]["env"], FORK_PR) == ["dev"]


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


# --- where prod runs ------------------------------------------------------------------
#
# prod's API endpoint is private, so every job that can act on prod must run on a
# self-hosted runner. `runs-on` is an expression: `evaluate` below implements the part
# of GitHub's expression language these workflows use (docs.github.com/en/actions/
# reference/workflows-and-actions/expressions): literals, context paths, ==, !=, !, &&,
# || (which return an operand, as in JavaScript), parentheses and fromJSON.


def _pull_request_from(repo: str) -> dict:
    return {
        "github": {
            "repository": "acme/gpu-inference",
            "event": {"pull_request": {"head": {"repo": {"full_name": repo}}}},
        }
    }


SAME_REPO_PR, FORK_PR = _pull_request_from("acme/gpu-inference"), _pull_request_from("someone/gpu-inference")
GITHUB_HOSTED = re.compile(r"^(ubuntu|windows|macos)-")
TOKEN = re.compile(r"\s*(?:('(?:[^']|'')*')|(==|!=|&&|\|\||[!().,])|([A-Za-z_][\w.-]*)|(-?\d+(?:\.\d+)?))")


def evaluate(expression: object, contexts: dict) -> object:
    """The value of a `${{ }}` expression, with `contexts` such as {"matrix": {...}}; anything else is itself."""
    if not isinstance(expression, str) or not expression.strip().startswith("${{"):
        return expression
    text = expression.strip().removeprefix("${{").removesuffix("}}")
    tokens, pos = [], 0
    while text[pos:].strip():
        m = TOKEN.match(text, pos)
        assert m, f"cannot read the expression at {text[pos:]!r}"
        tokens.append(m.groups())
        pos = m.end()

    def peek(op: str) -> bool:
        return bool(tokens) and tokens[0][1] == op

    def take(op: str) -> None:
        assert peek(op), f"expected {op} in {expression!r}"
        tokens.pop(0)

    def primary() -> object:
        string, op, name, number = tokens.pop(0)
        if string is not None:
            return string[1:-1].replace("''", "'")
        if number is not None:
            return float(number)
        if op == "(":
            value = either()
            take(")")
            return value
        if op == "!":
            return not truthy(primary())
        if name in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[name]
        if peek("("):
            take("(")
            arg = either()
            take(")")
            assert name.lower() == "fromjson", f"function {name} is not supported here"
            return json.loads(arg)
        node: object = contexts
        for part in name.split("."):
            node = node.get(part, "") if isinstance(node, dict) else ""  # missing: empty string
        return node

    def equality() -> object:
        left = primary()
        while peek("==") or peek("!="):
            negate = tokens.pop(0)[1] == "!="
            right = primary()
            same = left.lower() == right.lower() if isinstance(left, str) and isinstance(right, str) else left == right
            left = same != negate
        return left

    def both() -> object:
        left = equality()
        while peek("&&"):
            take("&&")
            right = equality()
            left = right if truthy(left) else left
        return left

    def either() -> object:
        left = both()
        while peek("||"):
            take("||")
            right = both()
            left = left if truthy(left) else right
        return left

    value = either()
    assert not tokens, f"unread tokens {tokens} in {expression!r}"
    return value


def truthy(value: object) -> bool:
    return value not in (None, False, 0, "")


def condition(text: str, contexts: dict) -> bool:
    """An `if:`, which is an expression with or without `${{ }}`."""
    return truthy(evaluate(text if text.strip().startswith("${{") else f"${{{{ {text} }}}}", contexts))


def test_the_expression_reader_follows_github_semantics() -> None:
    assert evaluate("${{ 'a' == 'A' && fromJSON('[1]') || 'x' }}", {}) == [1]
    assert evaluate("${{ vars.MISSING || 'fallback' }}", {"vars": {}}) == "fallback"
    assert evaluate("${{ !(matrix.env == 'dev') }}", {"matrix": {"env": "prod"}}) is True
    assert evaluate("${{ matrix.env != 'prod' && 'hosted' || 'self' }}", {"matrix": {"env": "prod"}}) == "self"
    assert evaluate("ubuntu-24.04", {}) == "ubuntu-24.04"


def prod_capable_jobs() -> list[tuple[str, str, dict, dict]]:
    """(workflow, job, job definition, the contexts it runs prod with), for every job that can touch prod."""
    found = []
    for path in WORKFLOWS:
        workflow = load(path.name)
        for name, job in workflow["jobs"].items():
            if "uses" in job:
                continue  # a caller: the called workflow's jobs are checked with its inputs
            envs = evaluate(job.get("strategy", {}).get("matrix", {}).get("env", ""), SAME_REPO_PR) or []
            if "prod" in envs:
                found.append((path.name, name, job, {"matrix": {"env": "prod"}}))
            if "workflow_call" in workflow["on"]:
                callers = [
                    j["with"]["env"]
                    for p in WORKFLOWS
                    for j in load(p.name)["jobs"].values()
                    if j.get("uses") == f"./.github/workflows/{path.name}"
                ]
                if "prod" in callers:
                    found.append((path.name, name, job, {"inputs": {"env": "prod"}}))
    return found


def test_prod_is_deployed_and_previewed_by_some_job() -> None:
    assert {(w, j) for w, j, _, _ in prod_capable_jobs()} == {("preview.yml", "preview"), ("up.yml", "up")}


@pytest.mark.parametrize("labels", [None, '["self-hosted","linux","ci-vpc"]'])
def test_prod_jobs_never_run_on_github_hosted_runners(labels: str | None) -> None:
    variables = {} if labels is None else {"PROD_RUNNER_LABELS": labels}
    for workflow, name, job, contexts in prod_capable_jobs():
        runs_on = evaluate(job["runs-on"], {**contexts, "vars": variables})
        runs_on = [runs_on] if isinstance(runs_on, str) else runs_on
        assert "self-hosted" in runs_on, f"{workflow} {name} runs prod on {runs_on}, not a self-hosted runner"
        assert not [label for label in runs_on if GITHUB_HOSTED.match(label)], f"{workflow} {name}: {runs_on}"
        if labels is not None:
            assert runs_on == json.loads(labels), f"{workflow} {name} ignores PROD_RUNNER_LABELS: {runs_on}"


def test_dev_jobs_stay_on_github_hosted_runners() -> None:
    for workflow, name, job, contexts in prod_capable_jobs():
        dev = {key: {"env": "dev"} for key in contexts}
        assert evaluate(job["runs-on"], {**dev, "vars": {}}) == "ubuntu-24.04", f"{workflow} {name}"


def _guard(job: dict) -> dict:
    return job["steps"][0]


@pytest.mark.parametrize(("runner_environment", "exit_code"), [("github-hosted", 1), ("self-hosted", 0), ("", 0)])
def test_prod_jobs_stop_first_on_a_github_hosted_runner(runner_environment: str, exit_code: int) -> None:
    """PROD_RUNNER_LABELS could still name a hosted runner: the first step refuses it, before
    checkout and before any AWS credentials, for prod only."""
    for workflow, name, job, contexts in prod_capable_jobs():
        guard = _guard(job)
        assert condition(guard["if"], contexts), f"{workflow} {name}: the guard must run for prod"
        assert not condition(guard["if"], {key: {"env": "dev"} for key in contexts}), f"{workflow} {name}"
        env = {"PATH": "/usr/bin:/bin", "RUNNER_ENVIRONMENT": runner_environment}
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", guard["run"]], env=env, capture_output=True, text=True)
        assert proc.returncode == exit_code, f"{workflow} {name} with {runner_environment!r}: {proc.stdout}"
        if exit_code:
            assert "::error::prod runs on a self-hosted runner" in proc.stdout


def test_the_test_job_requires_every_tool() -> None:
    """GPUINF_REQUIRE_TOOLS=1 turns a skipped tool-backed test (missing promtool, helm) into a failure in CI."""
    job = load("preview.yml")["jobs"]["test"]
    assert job["env"]["GPUINF_REQUIRE_TOOLS"] == "1"
    assert any("./scripts/setup.sh --dev" in step.get("run", "") for step in job["steps"])
