"""Running a plan (tools/image_snapshot/executor.py), end to end on moto and step by step on Stubber.

moto runs the EC2 part for real (RunInstances, Stop, CreateSnapshot, Terminate, security
groups, tags) and accepts SendCommand / GetCommandInvocation (it executes nothing and
reports Success); it has no EKS or Bottlerocket public SSM parameters (and refuses to
create `/aws/...` names) and does not implement DescribeInstanceInformation, so those two
calls are answered by a stand-in. botocore's Stubber raises errors with exact codes, to
show that errors are told apart by code and never by message.
"""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
import yaml
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto import mock_aws

from tests.image_snapshot.support import ECR_IMAGE, REGION, options
from tools.image_snapshot import cli
from tools.image_snapshot.executor import INVOCATION_NOT_YET, BuildError, Executor, boto3_clients, error_code
from tools.image_snapshot.plan import Step, build_plan
from tools.image_snapshot.scripts import OUTPUT_MARKER


class _Stand_in:
    """A boto3 client with some methods replaced."""

    def __init__(self, real: Any, **methods: Any) -> None:
        self._real, self._methods = real, methods

    def __getattr__(self, name: str) -> Any:
        return self._methods.get(name) or getattr(self._real, name)


@pytest.fixture
def aws():
    with mock_aws():
        boto3.client("iam", region_name=REGION).create_instance_profile(InstanceProfileName="image-builder")
        yield boto3.client("ec2", region_name=REGION)


def _clients(
    ec2: Any, *, fail_command: str | None = None, fail_waiter: str | None = None, ec2_methods: dict | None = None
) -> Any:
    """Client factory over moto, answering what moto lacks; optionally failing one step."""
    ami = ec2.register_image(Name="eks-node-stand-in", Architecture="x86_64", RootDeviceName="/dev/xvda")["ImageId"]
    real = boto3_clients(REGION)
    titles: dict[str, str] = {}

    def client(service: str, region: str | None = None) -> Any:
        c = real(service, region)
        if service == "ssm":

            def send_command(**params: Any) -> Any:
                response = c.send_command(**params)
                titles[response["Command"]["CommandId"]] = params["Comment"]
                return response

            def get_command_invocation(CommandId: str, InstanceId: str) -> Any:
                answer = c.get_command_invocation(CommandId=CommandId, InstanceId=InstanceId)
                if fail_command and titles[CommandId].startswith(fail_command):
                    answer.update(Status="Failed", StandardErrorContent="ctr: failed to resolve reference")
                elif titles[CommandId].startswith("check"):
                    answer.update(StandardOutputContent=f"{OUTPUT_MARKER}used_bytes={190 * 2**30}\n")
                return answer

            return _Stand_in(
                c,
                get_parameter=lambda Name: {"Parameter": {"Name": Name, "Value": ami}},
                describe_instance_information=lambda **_: {"InstanceInformationList": [{"PingStatus": "Online"}]},
                send_command=send_command,
                get_command_invocation=get_command_invocation,
            )
        if service == "ec2":

            def get_waiter(name: str) -> Any:
                if name == fail_waiter:
                    raise RuntimeError(f"Waiter {name} failed: Max attempts exceeded")
                return c.get_waiter(name)

            return _Stand_in(c, get_waiter=get_waiter, **(ec2_methods or {}))
        return c

    return lambda _region: client


def _states(ec2: Any) -> list[str]:
    return [i["State"]["Name"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]


def _own_snapshots(ec2: Any) -> list[dict]:
    purpose = [{"Name": "tag:gpu-inference/purpose", "Values": ["image-cache"]}]
    return ec2.describe_snapshots(Filters=purpose)["Snapshots"]


def _groups(ec2: Any) -> list[str]:
    return [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"]


ARGV = ["--region", REGION, "--instance-profile", "image-builder", "--image", ECR_IMAGE, "--image", "nginx:1.27"]


def test_moto_build_snapshots_the_data_volume_and_cleans_up(aws, capsys) -> None:
    assert cli.main([*ARGV, "--json"], clients=_clients(aws), poll_s=0) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    (snapshot,) = _own_snapshots(aws)
    assert result["snapshotId"] == snapshot["SnapshotId"]
    assert snapshot["State"] == "completed" and snapshot["VolumeSize"] == 200 and snapshot["Encrypted"]
    tags = {t["Key"]: t["Value"] for t in snapshot["Tags"]}
    assert tags["gpu-inference/ami-id"] == result["amiId"].strip() and tags["gpu-inference/ami-id"].startswith("ami-")
    assert tags["gpu-inference/content-hash"] == result["contentHash"]
    assert tags["gpu-inference/image-02"] == "docker.io/library/nginx:1.27"
    assert _states(aws) == ["terminated"], "the builder must be gone"
    assert _groups(aws) == [], "the temporary security group must be gone"
    cache = result["stackConfig"]["gpu-inference:nodePools"]["gpu"]["imageCache"]
    assert cache == {"snapshotId": snapshot["SnapshotId"], "volumeGib": 200, "images": list(result["images"])}
    assert result["usedBytes"] == 190 * 2**30
    assert "warning: the images fill 95% of the 200 GiB volume" in captured.err


def test_moto_failed_pull_still_cleans_up(aws, capsys) -> None:
    assert cli.main(ARGV, clients=_clients(aws, fail_command="pull image 2/2"), poll_s=0) == 1
    err = capsys.readouterr().err
    assert "pull image 2/2: docker.io/library/nginx:1.27: Failed" in err and "failed to resolve reference" in err
    assert _states(aws) == ["terminated"]
    assert _groups(aws) == []
    assert _own_snapshots(aws) == [], "nothing was snapshotted"


def test_moto_failure_after_the_snapshot_deletes_it(aws, capsys) -> None:
    assert cli.main(ARGV, clients=_clients(aws, fail_waiter="snapshot_completed"), poll_s=0) == 1
    assert "Waiter snapshot_completed failed" in capsys.readouterr().err
    assert _own_snapshots(aws) == [], "a snapshot of a failed build must not be left behind"
    assert _states(aws) == ["terminated"]


def test_moto_bottlerocket_sends_the_ecr_password_only_when_running(aws, capsys) -> None:
    argv = [*ARGV[:6], "--ami-family", "bottlerocket"]
    assert cli.main(argv, clients=_clients(aws), poll_s=0) == 0
    commands = boto3.client("ssm", region_name=REGION).list_commands()["Commands"]
    pull = next(c for c in commands if c["Comment"].startswith("pull image"))
    token = boto3.client("ecr", region_name=REGION).get_authorization_token()["authorizationData"][0]
    password = base64.b64decode(token["authorizationToken"]).decode().partition(":")[2]
    assert f"--user AWS:{password} " in pull["Parameters"]["commands"][-1]
    assert "{{" not in json.dumps([c["Parameters"] for c in commands]), "placeholders are resolved before sending"
    # The text result: the snapshot ID as pulumi commands and as a stack-file fragment.
    out = capsys.readouterr().out
    (snapshot,) = _own_snapshots(aws)
    assert (
        f"pulumi config set --path 'gpu-inference:nodePools.gpu.imageCache.snapshotId' {snapshot['SnapshotId']}" in out
    )
    fragment = yaml.safe_load(out.split("(merge into the existing pool):\n", 1)[1].split("\nThe pool's")[0])
    assert fragment["config"]["gpu-inference:nodePools"]["gpu"]["imageCache"]["snapshotId"] == snapshot["SnapshotId"]
    assert "amiAlias must be bottlerocket@" in out


def _client_error(code: str, message: str | None = None, operation: str = "DeleteSecurityGroup") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message or code}}, operation)


def test_moto_failed_cleanup_after_a_good_build_keeps_the_snapshot_and_exits_1(aws, capsys) -> None:
    def denied(**_: Any) -> Any:
        raise _client_error("UnauthorizedOperation")

    clients = _clients(aws, ec2_methods={"delete_security_group": denied})
    assert cli.main(ARGV, clients=clients, poll_s=0) == 1
    captured = capsys.readouterr()
    (snapshot,) = _own_snapshots(aws)
    assert snapshot["SnapshotId"] in captured.out, "the snapshot is still reported"
    assert "cleanup failed: DeleteSecurityGroup" in captured.err and "security_group_id=sg-" in captured.err
    assert _states(aws) == ["terminated"]


def _delete_group_step() -> Step:
    (step,) = [s for s in build_plan(options()).cleanup if s.operation == "DeleteSecurityGroup"]
    return step


def test_security_group_deletion_is_retried_while_the_instance_lets_go() -> None:
    answers = [_client_error("DependencyViolation"), _client_error("DependencyViolation"), {}]

    def delete_security_group(**_: Any) -> Any:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    ec2 = SimpleNamespace(delete_security_group=delete_security_group)
    executor = Executor(lambda service, region=None: ec2, poll_s=0, sleep=lambda _: None, log=lambda _: None)
    executor.context["security_group_id"] = "sg-1"
    step = _delete_group_step()
    executor.execute(step)
    assert answers == [], "retried until it went through"
    with pytest.raises(Exception, match="UnauthorizedOperation"):
        answers.append(_client_error("UnauthorizedOperation"))
        executor.execute(step)


# ---------------------------------------------------------------- errors are told apart by code


def _stubbed(service: str) -> tuple[Any, Stubber]:
    client = boto3.client(service, region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")
    return client, Stubber(client)


def _executor(client: Any) -> Executor:
    return Executor(lambda service, region=None: client, poll_s=0, sleep=lambda _: None, log=lambda _: None)


def test_error_code_reads_the_response_not_the_message() -> None:
    assert error_code(_client_error("DependencyViolation", "anything at all")) == "DependencyViolation"
    assert error_code(_client_error("UnauthorizedOperation", "DependencyViolation")) == "UnauthorizedOperation"
    assert error_code(RuntimeError("DependencyViolation")) is None


def test_delete_security_group_retries_on_the_dependency_violation_code() -> None:
    ec2, stubber = _stubbed("ec2")
    stubber.add_client_error(
        "delete_security_group", service_error_code="DependencyViolation", service_message="in use"
    )
    stubber.add_response("delete_security_group", {}, {"GroupId": "sg-1"})
    executor = _executor(ec2)
    executor.context["security_group_id"] = "sg-1"
    with stubber:
        executor.execute(_delete_group_step())
    stubber.assert_no_pending_responses()


def test_another_code_with_the_retry_code_in_its_message_is_not_retried() -> None:
    ec2, stubber = _stubbed("ec2")
    stubber.add_client_error(
        "delete_security_group",
        service_error_code="UnauthorizedOperation",
        service_message="not allowed; the group has a DependencyViolation",
    )
    stubber.add_response("delete_security_group", {}, {"GroupId": "sg-1"})  # must not be reached
    executor = _executor(ec2)
    executor.context["security_group_id"] = "sg-1"
    with stubber, pytest.raises(ClientError) as exc:
        executor.execute(_delete_group_step())
    assert error_code(exc.value) == "UnauthorizedOperation"


def _shell_step() -> Step:
    return Step(
        "shell",
        "ssm",
        "SendCommand",
        "say hello",
        {
            "DocumentName": "AWS-RunShellScript",
            "InstanceIds": ["i-0123456789abcdef0"],
            "Parameters": {"commands": ["set -eu", "echo hello"], "executionTimeout": ["60"]},
        },
        timeout_s=60,
    )


COMMAND_ID = "0b4d1a6e-3f9c-4a47-9f1f-5d7a0c2e8b11"
INVOCATION = {"CommandId": COMMAND_ID, "InstanceId": "i-0123456789abcdef0"}


def _send(stubber: Stubber) -> None:
    stubber.add_response("send_command", {"Command": {"CommandId": COMMAND_ID}})


def test_an_invocation_that_does_not_exist_yet_is_waited_for() -> None:
    ssm, stubber = _stubbed("ssm")
    _send(stubber)
    stubber.add_client_error(
        "get_command_invocation", service_error_code=INVOCATION_NOT_YET, expected_params=INVOCATION
    )
    stubber.add_response("get_command_invocation", {**INVOCATION, "Status": "Success"}, INVOCATION)
    with stubber:
        _executor(ssm).execute(_shell_step())
    stubber.assert_no_pending_responses()


def test_another_code_with_invocation_does_not_exist_in_its_message_fails_the_step() -> None:
    ssm, stubber = _stubbed("ssm")
    _send(stubber)
    stubber.add_client_error(
        "get_command_invocation",
        service_error_code="AccessDeniedException",
        service_message=f"not authorized (the caller sees {INVOCATION_NOT_YET})",
    )
    with stubber, pytest.raises(ClientError) as exc:
        _executor(ssm).execute(_shell_step())
    assert error_code(exc.value) == "AccessDeniedException"


def test_a_failed_command_is_a_build_error_with_its_output() -> None:
    ssm, stubber = _stubbed("ssm")
    _send(stubber)
    failed = {**INVOCATION, "Status": "Failed", "StandardErrorContent": "boom", "StandardOutputContent": ""}
    stubber.add_response("get_command_invocation", failed, INVOCATION)
    with stubber, pytest.raises(BuildError, match=f"say hello: Failed \\(command {COMMAND_ID}\\)\n    boom"):
        _executor(ssm).execute(_shell_step())


def test_values_filled_into_a_script_are_shell_quoted() -> None:
    sent: list[dict] = []
    ssm = SimpleNamespace(
        send_command=lambda **params: sent.append(params) or {"Command": {"CommandId": "c-1"}},
        get_command_invocation=lambda **_: {"Status": "Success"},
    )
    step = Step(
        "shell",
        "ssm",
        "SendCommand",
        "fill",
        {"InstanceIds": ["{{instance_id}}"], "Parameters": {"commands": ["vol={{data_volume_id}}"]}},
    )
    executor = _executor(ssm)
    executor.context.update(instance_id="i-1", data_volume_id="vol-1; reboot")
    executor.execute(step)
    assert sent[0]["InstanceIds"] == ["i-1"], "only the script's text is shell-quoted"
    assert sent[0]["Parameters"]["commands"] == ["vol='vol-1; reboot'"]
    executor.context["data_volume_id"] = "vol-0123456789abcdef0"
    executor.execute(step)
    assert sent[1]["Parameters"]["commands"] == ["vol=vol-0123456789abcdef0"], "real IDs go in unchanged"
