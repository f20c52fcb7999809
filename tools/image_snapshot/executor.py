"""Runs a Plan against AWS through boto3: calls, waiters, SSM commands, retries, cleanup.

Cleanup steps run whatever happened to the build steps (also on Ctrl-C); a
failed cleanup step does not stop the others and is reported with what is left
to delete by hand. AWS errors are told apart by their code
(`error.response["Error"]["Code"]`), never by their message.
"""

from __future__ import annotations

import base64
import re
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from tools.image_snapshot.placeholders import ECR_SECRET, resolve
from tools.image_snapshot.plan import BUILD_TAG, Plan, Step
from tools.image_snapshot.scripts import OUTPUT_MARKER

# GetCommandInvocation's answer right after SendCommand, before the agent has the command.
INVOCATION_NOT_YET = "InvocationDoesNotExist"
RUNNING = ("Pending", "InProgress", "Delayed")


class BuildError(RuntimeError):
    """A step on AWS or on the instance failed."""


@dataclass
class Result:
    snapshot_id: str
    ami_id: str
    used_bytes: int | None
    context: dict[str, str]


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore ClientError; None for any other exception."""
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code")
    return None


class Executor:
    """Runs a Plan against AWS; cleanup steps run whatever happened to the build steps."""

    def __init__(
        self,
        client: Callable[..., Any],
        *,
        poll_s: float = 15.0,
        sleep: Callable[[float], None] = time.sleep,
        log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
    ) -> None:
        self._client = client  # client(service, region=None) -> boto3 client
        self._poll_s = poll_s
        self._sleep = sleep
        self._log = log
        self._ecr_passwords: dict[str, str] = {}
        self.context: dict[str, str] = {}
        self.cleanup_error = ""  # set when a cleanup step failed; the build itself may have succeeded

    def run(self, plan: Plan) -> Result:
        failed = True
        cleanup_errors: list[str] = []
        try:
            for n, step in enumerate(plan.build, start=1):
                self._log(f"[{n}/{len(plan.build)}] {step.service}.{step.operation}: {step.title}")
                self.execute(step)
            failed = False
        finally:
            for step in plan.cleanup:
                if step.when == "on-failure" and not failed:
                    continue
                if any(name not in self.context for name in step.needs):
                    continue
                self._log(f"[cleanup] {step.service}.{step.operation}: {step.title}")
                try:
                    self.execute(step)
                except Exception as exc:  # keep cleaning up; report at the end
                    cleanup_errors.append(f"{step.operation}: {exc}")
            if cleanup_errors:
                temporary = ("instance_id", "data_volume_id", "security_group_id")
                leftovers = ", ".join(f"{k}={self.context[k]}" for k in temporary if k in self.context)
                self.cleanup_error = (
                    f"cleanup failed: {'; '.join(cleanup_errors)}. Delete by hand what is left of"
                    f" {leftovers} (tagged {BUILD_TAG}={plan.options.build_id})"
                )
                self._log(self.cleanup_error)
        used = self.context.get("used_bytes")
        return Result(
            self.context["snapshot_id"], self.context["ami_id"], int(used) if used else None, dict(self.context)
        )

    # -- one step

    def execute(self, step: Step) -> None:
        """Run one step with its placeholders filled in from what earlier steps returned."""
        params = self._shell_params(step) if step.kind == "shell" else resolve(dict(step.params), self._lookup)
        client = self._client(step.service)
        if step.kind == "call":
            response = self._call(client, step, params)
            for name, path in step.outputs.items():
                value = _search(path, response)
                if not value:
                    raise BuildError(f"{step.operation} returned no {path}")
                self.context[name] = str(value)
                self._log(f"    {name} = {value}")
        elif step.kind == "wait" and step.service == "ssm":
            self._wait_ssm_online(client, params, step.timeout_s)
        elif step.kind == "wait":
            attempts = max(1, int(step.timeout_s / self._poll_s)) if self._poll_s else 3
            waiter = client.get_waiter(step.operation)
            waiter.wait(**params, WaiterConfig={"Delay": int(self._poll_s), "MaxAttempts": attempts})
        else:
            self._run_shell(client, step, params)

    def _shell_params(self, step: Step) -> dict:
        """SendCommand's parameters. A value filled into the script is one shell word whatever it
        holds (IDs and the ECR password are shell-safe already, so they go in unchanged)."""
        params = resolve({k: v for k, v in step.params.items() if k != "Parameters"}, self._lookup)
        commands = resolve(list(step.params["Parameters"]["commands"]), lambda n: shlex.quote(self._lookup(n)))
        return {**params, "Parameters": {**step.params["Parameters"], "commands": commands}}

    def _lookup(self, name: str) -> str:
        if name.startswith(ECR_SECRET):
            return self._ecr_password(name[len(ECR_SECRET) :])
        if name not in self.context:
            raise BuildError(f"internal error: {name} is not known yet")
        return self.context[name]

    def _ecr_password(self, region: str) -> str:
        if region not in self._ecr_passwords:
            data = self._client("ecr", region=region).get_authorization_token()["authorizationData"][0]
            self._ecr_passwords[region] = base64.b64decode(data["authorizationToken"]).decode().partition(":")[2]
        return self._ecr_passwords[region]

    def _call(self, client: Any, step: Step, params: dict) -> Any:
        method = getattr(client, _snake(step.operation))
        deadline = time.monotonic() + step.timeout_s
        while True:
            try:
                return method(**params)
            except ClientError as exc:
                code = error_code(exc)
                if code not in step.retry_codes or time.monotonic() > deadline:
                    raise
                self._log(f"    {code}; retrying")
                self._sleep(self._poll_s or 1)

    def _wait_ssm_online(self, ssm: Any, params: dict, timeout_s: int) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            found = ssm.describe_instance_information(**params).get("InstanceInformationList", [])
            if any(i.get("PingStatus") == "Online" for i in found):
                return
            if time.monotonic() > deadline:
                raise BuildError(
                    f"the builder's SSM agent was not online after {timeout_s}s: check the instance profile"
                    " (AmazonSSMManagedInstanceCore) and the subnet's route to SSM (NAT or VPC endpoints)"
                )
            self._sleep(self._poll_s)

    def _run_shell(self, ssm: Any, step: Step, params: dict) -> None:
        command_id = ssm.send_command(**params)["Command"]["CommandId"]
        instance = params["InstanceIds"][0]
        deadline = time.monotonic() + step.timeout_s + 600
        while True:
            try:
                invocation = ssm.get_command_invocation(CommandId=command_id, InstanceId=instance)
            except ClientError as exc:
                if error_code(exc) != INVOCATION_NOT_YET:
                    raise
                invocation = {"Status": "Pending"}
            status = invocation["Status"]
            if status not in RUNNING:
                break
            if time.monotonic() > deadline:
                raise BuildError(f"{step.title}: still {status} after {step.timeout_s}s (command {command_id})")
            self._sleep(self._poll_s)
        out = invocation.get("StandardOutputContent", "")
        if status != "Success":
            output = "\n".join(t for t in (invocation.get("StandardErrorContent", ""), out) if t.strip())
            raise BuildError(f"{step.title}: {status} (command {command_id})\n{_tail(output)}")
        for line in out.splitlines():
            if line.startswith(OUTPUT_MARKER):
                name, _, value = line[len(OUTPUT_MARKER) :].partition("=")
                if name in step.outputs:
                    self.context[name] = value.strip()


def _snake(operation: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()


def _search(path: str, response: Any) -> Any:
    import jmespath  # botocore's own dependency

    return jmespath.search(path, response)


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join("    " + line for line in text.strip().splitlines()[-lines:])


def boto3_clients(region: str) -> Callable[..., Any]:
    """A client factory for one session: `client(service, region=None)`, each client made once."""
    import boto3

    session = boto3.session.Session(region_name=region)
    cache: dict[tuple[str, str], Any] = {}

    def client(service: str, region: str | None = None) -> Any:
        key = (service, region or session.region_name)
        if key not in cache:
            cache[key] = session.client(service, region_name=key[1])
        return cache[key]

    return client
