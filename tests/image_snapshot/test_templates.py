"""The builder's shell scripts: the templates (tools/image_snapshot/templates/*.sh) and what
tools/image_snapshot/scripts.py renders from them for a plan.

The templates are complete scripts: shellcheck and `bash -n` run over each file as it is.
The rendered scripts are what SSM Run Command executes; they are run here under a POSIX sh
with stand-ins for ctr, aws, df and friends.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from domain import image_cache
from tests.image_snapshot.support import (
    ECR_IMAGE,
    OTHER_ECR_IMAGE,
    PUBLIC_IMAGE,
    options,
    placeholders,
    plan,
    shell_steps,
    syntax_errors,
)
from tests.support.rendered import tools_required
from tools.image_snapshot import scripts
from tools.image_snapshot.placeholders import ref
from tools.image_snapshot.plan import Step, build_plan
from tools.plan.run import ROOT

TEMPLATES = scripts.template_names()
SHELLCHECK_SKIP = "shellcheck not installed: run scripts/install-shellcheck.sh (scripts/setup.sh --dev runs it)"
POSIX_SH = shutil.which("dash") or shutil.which("sh")


def shellcheck_or_skip() -> str:
    found = shutil.which("shellcheck")
    if found is None:
        if tools_required():
            pytest.fail(f"{SHELLCHECK_SKIP} (required here: CI or GPUINF_REQUIRE_TOOLS=1)")
        pytest.skip(SHELLCHECK_SKIP)
    return found


# ---------------------------------------------------------------- the template files


def test_the_templates_are_there_and_shipped_as_package_data() -> None:
    assert set(TEMPLATES) == {
        f"{family}-{stage}.sh"
        for family in ("al2023", "bottlerocket")
        for stage in ("prepare", "pull", "pull-ecr", "finish")
    }
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for name in TEMPLATES:
        path = f"image_snapshot/templates/{name}"
        assert any(fnmatch.fnmatch(path, pattern) for pattern in package_data.get("tools", [])), (
            f"pyproject.toml [tool.setuptools.package-data] tools = {package_data.get('tools')} does not ship {path}"
        )


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_passes_shellcheck(name: str) -> None:
    shellcheck = shellcheck_or_skip()
    path = scripts.TEMPLATES / name
    proc = subprocess.run([shellcheck, "--format=gcc", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"shellcheck {name}:\n{proc.stdout}{proc.stderr}"


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_parses_under_bash_and_posix_sh(name: str) -> None:
    path = scripts.TEMPLATES / name
    text = path.read_text()
    assert text.startswith("#!/bin/sh\n"), f"{name}: SSM's AWS-RunShellScript runs it with sh"
    proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, f"bash -n {name}: {proc.stderr}"
    assert POSIX_SH, "no POSIX shell to check the templates with"
    assert not syntax_errors(text, POSIX_SH), f"{POSIX_SH} -n {name}: {syntax_errors(text, POSIX_SH)}"


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_header_lists_the_inputs_its_body_uses(name: str) -> None:
    text = (scripts.TEMPLATES / name).read_text()
    header = text[: text.index("\nset -eu\n")]
    listed = re.search(r"^# Inputs: (.*)$", header, re.MULTILINE)
    assert listed, f"{name}: no `# Inputs:` line in its header"
    assert sorted(listed[1].split()) == sorted(scripts.template_inputs(name)), f"{name}: header and body disagree"


@pytest.mark.parametrize("name", TEMPLATES)
def test_inputs_are_never_inside_double_quotes(name: str) -> None:
    # An inlined input is a shell-quoted word: inside "..." its quotes would be literal.
    for n, line in enumerate(scripts.template_body(name).splitlines(), start=1):
        unquoted = re.sub(r"'[^']*'", "''", line)  # single-quoted text cannot hold an input either way
        for quoted in re.findall(r'"[^"]*"', unquoted):
            assert not re.search(r"\$\{[A-Z]", quoted), f"{name} line {n}: an input inside double quotes: {line}"


# ---------------------------------------------------------------- rendering


def test_render_needs_exactly_the_template_inputs() -> None:
    inputs = {"CRI_NAMESPACE": "k8s.io", "PLATFORM": "linux/amd64", "CRI_MANAGED_LABEL": "x=y"}
    with pytest.raises(ValueError, match=re.escape("missing ['IMAGE'], unknown []")):
        scripts.render("al2023-pull.sh", **inputs)
    with pytest.raises(ValueError, match=re.escape("missing [], unknown ['EXTRA']")):
        scripts.render("al2023-pull.sh", **inputs, IMAGE="a/b:1", EXTRA="x")


def test_render_inlines_each_input_as_one_shell_word_and_keeps_the_script_own_variables() -> None:
    hostile = "a b; touch /tmp/pwned $(id) `id` 'q'"
    text = scripts.render(
        "al2023-pull.sh", CRI_NAMESPACE="k8s.io", PLATFORM="linux/amd64", CRI_MANAGED_LABEL="x=y", IMAGE=hostile
    )
    (line,) = [line for line in text.splitlines() if " images pull " in line]
    argv = shlex.split(line)
    assert argv[argv.index(">") - 1] == hostile, f"the image must stay one word: {line}"
    assert text.startswith("set -eu\n") and not text.endswith("\n")
    assert 'trap \'tail -n 20 "$log"; rm -f "$log"\' EXIT' in text, "the script's own $log is not an input"
    lists = scripts.render(
        "bottlerocket-finish.sh", CRI_NAMESPACE="k8s.io", IMAGES=["a/b:1", "c d"], OUTPUT_MARKER="m:"
    )
    assert "for ref in a/b:1 'c d'; do" in lists.splitlines()


def test_inputs_known_only_at_run_time_stay_placeholders() -> None:
    text = scripts.prepare_script(options())
    assert "vol={{data_volume_id}}" in text.splitlines()
    assert placeholders(text) == {"data_volume_id"}


def test_every_template_is_used_by_some_plan(monkeypatch) -> None:
    used: set[str] = set()
    render = scripts.render

    def recording(name: str, **inputs):
        used.add(name)
        return render(name, **inputs)

    monkeypatch.setattr(scripts, "render", recording)
    for family in ("al2023", "bottlerocket"):
        build_plan(options("--ami-family", family, images=(ECR_IMAGE, PUBLIC_IMAGE)))
    assert used == set(TEMPLATES)


# The rendered scripts of a sample plan, as the single-file tool produced them before the
# templates existed (captured from it; every script of several plans was compared byte for byte).
CTR = "ctr -n k8s.io"
HOST_CTR = "apiclient exec admin sheltie ctr -a /run/containerd/containerd.sock -n k8s.io"
PULL_FLAGS = "--snapshotter overlayfs --platform linux/amd64 --label io.cri-containerd.image=managed"
LOG = ["log=$(mktemp)", """trap 'tail -n 20 "$log"; rm -f "$log"' EXIT"""]
EXPECTED_PULLS = {
    "al2023": [
        [
            "set -eu",
            "token=$(aws ecr get-login-password --region us-west-2)",
            *LOG,
            f'{CTR} images pull {PULL_FLAGS} --user "AWS:$token" {ECR_IMAGE} > "$log" 2>&1',
        ],
        ["set -eu", *LOG, f'{CTR} images pull {PULL_FLAGS} {PUBLIC_IMAGE} > "$log" 2>&1'],
    ],
    "bottlerocket": [
        [
            "set -eu",
            *LOG,
            f'{HOST_CTR} images pull {PULL_FLAGS} --user AWS:{{{{ecr-password:us-west-2}}}} {ECR_IMAGE} > "$log" 2>&1',
        ],
        ["set -eu", *LOG, f'{HOST_CTR} images pull {PULL_FLAGS} {PUBLIC_IMAGE} > "$log" 2>&1'],
    ],
}


@pytest.mark.parametrize("family", ["al2023", "bottlerocket"])
def test_rendered_scripts_are_the_ones_the_tool_always_sent(family: str) -> None:
    p = plan("--ami-family", family)
    assert [s.script.splitlines() for s in shell_steps(p, "pull image")] == EXPECTED_PULLS[family]
    finish = shell_steps(p, "check")[0].script.splitlines()
    ctr = CTR if family == "al2023" else HOST_CTR
    images = [ECR_IMAGE, PUBLIC_IMAGE] + ([image_cache.AL2023_SANDBOX_IMAGE] if family == "al2023" else [])
    assert finish[:4] == ["set -eu", f"names=$({ctr} images ls -q)", "missing=0", f"for ref in {' '.join(images)}; do"]
    assert finish[6:8] == ['[ "$missing" -eq 0 ]', f"{ctr} images ls"]
    prepare = shell_steps(p, "prepare")[0].script.splitlines()
    if family == "al2023":
        assert prepare[:2] == ["set -eu", "vol={{data_volume_id}}"]
        assert '  for candidate in /dev/xvdb "$by_id"; do' in prepare
        assert finish[8] == (
            "echo image-snapshot-output:used_bytes=$(df -B1 --output=used /var/lib/containerd | tail -n 1 | tr -d ' ')"
        )
    else:
        assert prepare[-1] == f"{HOST_CTR} version"
        assert finish[-2] == '[ -z "$used" ] || echo image-snapshot-output:used_bytes=$used'


# ---------------------------------------------------------------- what the scripts do


def _pull_command(step: Step) -> list[str]:
    (line,) = [line for line in step.script.splitlines() if " images pull " in line]
    argv = shlex.split(line)
    return argv[: argv.index(">")]


@pytest.mark.parametrize("family", ["al2023", "bottlerocket"])
def test_each_image_is_pulled_in_order_into_the_k8s_io_namespace(family: str) -> None:
    images = (ECR_IMAGE, PUBLIC_IMAGE, OTHER_ECR_IMAGE, "quay.io/org/model:3.1")
    p = plan("--ami-family", family, "--arch", "arm64", images=images)
    pulls = shell_steps(p, "pull image")
    assert [_pull_command(s)[-1] for s in pulls] == list(images), "one pull per image, in the given order"
    for step in pulls:
        argv = _pull_command(step)
        assert "-n" in argv and argv[argv.index("-n") + 1] == "k8s.io", f"{step.title}: not in k8s.io: {argv}"
        assert argv[argv.index("images") + 1] == "pull"
        assert argv[argv.index("--platform") + 1] == "linux/arm64"
        assert argv[argv.index("--snapshotter") + 1] == "overlayfs", "the CRI's default snapshotter"
        assert argv[argv.index("--label") + 1] == image_cache.CRI_MANAGED_LABEL
        assert step.params["DocumentName"] == "AWS-RunShellScript"
        assert step.params["InstanceIds"] == [ref("instance_id")]
        if family == "bottlerocket":
            assert argv[:4] == ["apiclient", "exec", "admin", "sheltie"], "Bottlerocket pulls run on the host"


def test_al2023_logs_in_to_private_ecr_on_the_instance() -> None:
    pulls = shell_steps(plan(images=(ECR_IMAGE, OTHER_ECR_IMAGE, PUBLIC_IMAGE)), "pull image")
    texts = [s.script for s in pulls]
    assert "aws ecr get-login-password --region us-west-2" in texts[0]
    assert "aws ecr get-login-password --region eu-west-1" in texts[1], "the registry's region, not the build's"
    assert "--user" not in texts[2] and "ecr" not in texts[2], "public registries are pulled anonymously"
    assert not any(placeholders(s.params) - {"instance_id"} for s in pulls), "no password leaves this machine"


def test_bottlerocket_gets_the_ecr_password_at_run_time_only() -> None:
    pulls = shell_steps(plan("--ami-family", "bottlerocket", images=(ECR_IMAGE, PUBLIC_IMAGE)), "pull image")
    assert placeholders(pulls[0].params) == {"instance_id", "ecr-password:us-west-2"}
    assert "--user" not in pulls[1].script


def test_ecr_registries_are_recognised_by_host() -> None:
    assert scripts.ecr_region(ECR_IMAGE) == "us-west-2"
    assert scripts.ecr_region("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com/m:1") == "us-gov-west-1"
    assert scripts.ecr_region("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/m:1") == "cn-north-1"
    assert scripts.ecr_region(PUBLIC_IMAGE) is None
    assert scripts.ecr_region("docker.io/library/123456789012.dkr.ecr.us-west-2.amazonaws.com:1") is None


@pytest.mark.parametrize("family", ["al2023", "bottlerocket"])
def test_shell_scripts_are_valid_posix_sh(family: str) -> None:
    assert POSIX_SH, "no POSIX shell to check the scripts with"
    for step in plan("--ami-family", family).build:
        if step.kind == "shell":
            assert step.script.startswith("set -eu\n"), f"{step.title} must stop at the first failing command"
            assert not syntax_errors(step.script, POSIX_SH), f"{step.title}: {syntax_errors(step.script, POSIX_SH)}"


def test_al2023_prepare_writes_the_volume_the_node_mounts() -> None:
    script = shell_steps(plan(), "prepare")[0].script
    assert f"mkfs.xfs -q -K -L {image_cache.FILESYSTEM_LABEL} " in script, "the label the node's user data mounts by"
    assert 'cp -a /var/lib/containerd/. "$seed"/' in script, "the AMI's sandbox image must come along"
    assert 'mount "$dev" /var/lib/containerd' in script
    assert "already holds a filesystem" in script, "never format a volume that has data"
    assert script.index("mkfs") < script.index("systemctl start containerd")


def test_finish_checks_every_image_then_flushes() -> None:
    al2023 = shell_steps(plan(), "check")[0].script
    for image in (ECR_IMAGE, PUBLIC_IMAGE, image_cache.AL2023_SANDBOX_IMAGE):
        assert image in al2023.splitlines()[3], f"{image} is not checked"
    lines = al2023.splitlines()
    assert lines[-3:] == ["systemctl stop containerd", "sync", "umount /var/lib/containerd"]
    bottlerocket = shell_steps(plan("--ami-family", "bottlerocket"), "check")[0].script
    assert image_cache.AL2023_SANDBOX_IMAGE not in bottlerocket
    assert bottlerocket.splitlines()[-1] == "apiclient exec admin sheltie sync"


def _run_with_stubs(
    script: str, tmp_path: Path, stubs: dict[str, str], env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run `script` under a POSIX sh with fake commands first on PATH; returns the process and the calls made."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir(exist_ok=True)
    calls.write_text("")
    for name, body in stubs.items():
        stub = bin_dir / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >> {calls}\n{body}\n')
        stub.chmod(0o755)
    shell = POSIX_SH or "sh"
    environment = {"PATH": f"{bin_dir}:/usr/bin:/bin", **(env or {})}
    proc = subprocess.run([shell, "-c", script], capture_output=True, text=True, env=environment, timeout=30)
    return proc, calls.read_text().splitlines()


def _ctr_listing(tmp_path: Path, *names: str) -> str:
    """Body of a fake `ctr` whose `images ls -q` prints `names`."""
    listing = tmp_path / "images.txt"
    listing.write_text("".join(f"{n}\n" for n in names))
    return f'if [ "$5" = "-q" ]; then cat {listing}; fi'


FINISH_STUBS = {"df": "echo Used; echo ' 1234'", "systemctl": "", "sync": "", "umount": ""}


def test_finish_script_flushes_when_every_image_is_there(tmp_path: Path) -> None:
    script = shell_steps(plan(), "check")[0].script
    ctr = _ctr_listing(tmp_path, "other/image:1", ECR_IMAGE, PUBLIC_IMAGE, image_cache.AL2023_SANDBOX_IMAGE)
    proc, calls = _run_with_stubs(script, tmp_path, {"ctr": ctr, **FINISH_STUBS})
    assert proc.returncode == 0, proc.stderr
    assert f"{scripts.OUTPUT_MARKER}used_bytes=1234" in proc.stdout
    assert calls[-3:] == ["systemctl stop containerd", "sync ", "umount /var/lib/containerd"]


def test_finish_script_fails_and_keeps_the_volume_when_an_image_is_missing(tmp_path: Path) -> None:
    script = shell_steps(plan(), "check")[0].script
    stubs = {"ctr": _ctr_listing(tmp_path, ECR_IMAGE), "df": "", "systemctl": "", "sync": "", "umount": ""}
    proc, calls = _run_with_stubs(script, tmp_path, stubs)
    assert proc.returncode != 0
    assert f"missing from the store: {PUBLIC_IMAGE}" in proc.stderr
    assert f"missing from the store: {image_cache.AL2023_SANDBOX_IMAGE}" in proc.stderr
    assert not any(c.startswith("umount") for c in calls)


def test_a_template_run_with_its_inputs_in_the_environment_does_what_the_rendered_script_does(
    tmp_path: Path,
) -> None:
    rendered = shell_steps(plan(), "check")[0].script
    ctr = _ctr_listing(tmp_path, ECR_IMAGE, PUBLIC_IMAGE, image_cache.AL2023_SANDBOX_IMAGE)
    env = {
        "CRI_NAMESPACE": image_cache.CRI_NAMESPACE,
        "IMAGES": " ".join([ECR_IMAGE, PUBLIC_IMAGE, image_cache.AL2023_SANDBOX_IMAGE]),
        "OUTPUT_MARKER": scripts.OUTPUT_MARKER,
        "CONTAINERD_ROOT": image_cache.CONTAINERD_ROOT,
    }
    template = (scripts.TEMPLATES / "al2023-finish.sh").read_text()
    outcomes = [_run_with_stubs(text, tmp_path, {"ctr": ctr, **FINISH_STUBS}, env) for text in (rendered, template)]
    (first, first_calls), (second, second_calls) = outcomes
    assert (first.returncode, first.stdout, first_calls) == (second.returncode, second.stdout, second_calls)
    assert first.returncode == 0, first.stderr


def test_pull_script_fails_with_the_end_of_ctr_output(tmp_path: Path) -> None:
    (step,) = shell_steps(plan(images=(ECR_IMAGE,)), "pull image")
    proc, calls = _run_with_stubs(
        step.script,
        tmp_path,
        {"aws": "echo secret-token", "ctr": "echo 'resolving'; echo 'ctr: pull access denied' >&2; exit 1"},
    )
    assert proc.returncode == 1
    assert "ctr: pull access denied" in proc.stdout
    assert calls[0] == "aws ecr get-login-password --region us-west-2"
    assert "--user AWS:secret-token" in calls[1]
    assert "secret-token" not in proc.stdout + proc.stderr, "the registry password must not reach SSM's output"


def test_pull_script_stops_when_the_ecr_login_fails(tmp_path: Path) -> None:
    (step,) = shell_steps(plan(images=(ECR_IMAGE,)), "pull image")
    proc, calls = _run_with_stubs(step.script, tmp_path, {"aws": "exit 255", "ctr": ""})
    assert proc.returncode == 255
    assert [c.split()[0] for c in calls] == ["aws"], "ctr must not run without credentials"


def test_shellcheck_requirement_follows_the_ci_switch(monkeypatch) -> None:
    monkeypatch.setenv("PATH", os.devnull)  # no shellcheck anywhere
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("GPUINF_REQUIRE_TOOLS", "1")
    with pytest.raises(pytest.fail.Exception, match=re.escape("install-shellcheck.sh")):
        shellcheck_or_skip()
    monkeypatch.delenv("GPUINF_REQUIRE_TOOLS")
    with pytest.raises(pytest.skip.Exception, match=re.escape("install-shellcheck.sh")):
        shellcheck_or_skip()


def test_setup_dev_installs_shellcheck() -> None:
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    dev_block = setup[setup.rindex('if [ "${1:-}" = "--dev" ]; then') :]
    assert "./scripts/install-shellcheck.sh" in dev_block, "setup.sh --dev must install what these tests need"
    assert os.access(ROOT / "scripts" / "install-shellcheck.sh", os.X_OK)
