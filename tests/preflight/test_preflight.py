"""`python -m tools.preflight`: every branch, against moto where moto can answer.

What moto 5.2 answers here, from its real data: EC2 availability zones,
`describe_instance_types` (vCPUs, GpuInfo; `instance-type` wildcards such as
`g6.*` work) and `describe_instance_type_offerings` per zone, with real gaps
in us-west-2: g5 is not offered in us-west-2d, p5e only in us-west-2c. Also
SSM `get_parameter`, which answers ParameterNotFound for the EKS AMI
parameters (moto has none of them, and refuses to create `/aws/...` names).

What is stubbed with botocore's Stubber (request parameters are still checked
against the service model): Service Quotas, since moto has no EC2 quota codes
(NoSuchResourceException) and no `get_aws_default_service_quota`; and SSM
`get_parameter` where a test needs an AMI parameter to exist.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import pytest
import yaml
from botocore.exceptions import ClientError, EndpointConnectionError
from botocore.stub import Stubber
from moto import mock_aws

from domain import versions
from domain.amis import ssm_parameter
from domain.settings import Settings
from tests.conftest import in_region, settings_of, stack_config
from tools.plan.run import ROOT
from tools.preflight import aws, checks
from tools.preflight.__main__ import main

REGION = "us-west-2"
NETWORK, POOLS = "gpu-inference:network", "gpu-inference:nodePools"
OD_G, SPOT_G, OD_P, SPOT_P, SPOT_P5 = checks.OD_G, checks.SPOT_G, checks.OD_P, checks.SPOT_P, checks.SPOT_P5
PLENTY = 10_000.0
QUOTAS_P5_NAME = checks.QUOTAS[checks.SPOT_P5]
AMI = "ami-0123456789abcdef0"
DEV_K8S = "1.35"  # Pulumi.dev.yaml's cluster.version
GPU_AMI = (
    f"/aws/service/eks/optimized-ami/{DEV_K8S}/amazon-linux-2023/x86_64/nvidia/"
    f"amazon-eks-node-al2023-x86_64-nvidia-{DEV_K8S}-{versions.EKS_AMI_RELEASE}/image_id"
)


# --- fixtures and helpers ---------------------------------------------------------------


def _no_aws_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """preflight's own backoff pauses, recorded instead of slept."""
    slept: list[float] = []
    monkeypatch.setattr(aws.time, "sleep", slept.append)
    return slept


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sleeps: list[float]):
    _no_aws_files(monkeypatch, tmp_path)
    for var, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")  # preflight reads no AMIs from EC2; saves ~0.5 s a test
    with mock_aws():
        yield


# A quota answer: a number (the applied value), None (neither applied nor default),
# ("default", n) (no applied value, AWS default n), ("throttled", n) (throttled once, then n).
QuotaAnswer = float | None | tuple[str, float]


@cache
def _botocore_session() -> botocore.session.Session:
    """One botocore session for the moto tests: it loads each service model once (~0.3 s for EC2's)."""
    return botocore.session.get_session()


class Account:
    """A boto3 session: EC2 and SSM answered by moto; Service Quotas, and SSM when `amis` is given, by a Stubber."""

    def __init__(self, quotas: Mapping[str, QuotaAnswer], amis: Mapping[str, str | None] | None = None):
        self.session = boto3.Session(region_name=REGION, botocore_session=_botocore_session())
        self.stubs: list[Stubber] = []
        self.clients: dict[str, Any] = {}
        stub = self._stub("service-quotas")
        for code in sorted(quotas):  # preflight asks in code order
            params = {"ServiceCode": "ec2", "QuotaCode": code}
            answer = quotas[code]
            found = {"Quota": {"QuotaCode": code, "QuotaName": checks.QUOTAS[code]}}
            if answer is None or (isinstance(answer, tuple) and answer[0] == "default"):
                stub.add_client_error("get_service_quota", "NoSuchResourceException", expected_params=params)
            if answer is None:
                stub.add_client_error(
                    "get_aws_default_service_quota", "NoSuchResourceException", expected_params=params
                )
            elif isinstance(answer, tuple) and answer[0] == "default":
                found["Quota"]["Value"] = answer[1]
                stub.add_response("get_aws_default_service_quota", found, params)
            else:
                if isinstance(answer, tuple):  # throttled once first
                    stub.add_client_error(
                        "get_service_quota", "ThrottlingException", "Rate exceeded", expected_params=params
                    )
                    answer = answer[1]
                found["Quota"]["Value"] = answer
                stub.add_response("get_service_quota", found, params)
        if amis is not None:
            ssm = self._stub("ssm")
            for name in sorted(amis):
                if amis[name] is None:
                    ssm.add_client_error("get_parameter", "ParameterNotFound", expected_params={"Name": name})
                else:
                    ssm.add_response(
                        "get_parameter", {"Parameter": {"Name": name, "Value": amis[name]}}, {"Name": name}
                    )

    def _stub(self, service: str) -> Stubber:
        client = self.session.client(service, region_name=REGION)
        self.clients[service] = client
        stub = Stubber(client)
        stub.activate()
        self.stubs.append(stub)
        return stub

    def client(self, service: str, **kwargs: Any) -> Any:
        return self.clients.get(service) or self.session.client(service, **kwargs)

    def __getattr__(self, name: str) -> Any:  # get_credentials, get_available_regions, ...
        return getattr(self.session, name)

    def verify(self) -> None:
        for stub in self.stubs:
            stub.assert_no_pending_responses()


def all_amis(config: dict) -> dict[str, str | None]:
    return dict.fromkeys(checks.ami_parameters(settings_of(config)), AMI)


def preflight(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    config: dict,
    quotas: Mapping[str, QuotaAnswer],
    amis: Mapping[str, str | None] | str | None = "all",
    args: tuple[str, ...] = (),
) -> tuple[int, str, str]:
    """Run the CLI on `config` against moto; every stubbed answer must have been asked for."""
    path = tmp_path / "Pulumi.check.yaml"
    path.write_text(yaml.safe_dump({"config": config}))
    account = Account(quotas, all_amis(config) if amis == "all" else amis)  # type: ignore[arg-type]
    code = main(["--stack", "check", "--config", str(path), *args], session=account)
    out = capsys.readouterr()
    account.verify()
    return code, out.out, out.err


def dev(zones: list[str] | None = None, gpu_families: list[str] | None = None) -> dict:
    """Pulumi.dev.yaml: us-west-2; pools cpu (c7i, m7i), gpu (g5, g6; spot + on-demand, maxGpus 4,
    maxCpu 96) and gpu-shared (g6; spot + on-demand, maxGpus 2, maxCpu 48)."""
    config = stack_config("dev")
    if zones:
        config[NETWORK]["availabilityZones"] = zones
    if gpu_families:
        config[POOLS]["gpu"]["instanceFamilies"] = gpu_families
    return config


G_ONLY = {OD_G: PLENTY, SPOT_G: PLENTY}  # what dev's pools can count against
G_AND_P = {**G_ONLY, OD_P: PLENTY, SPOT_P: PLENTY, SPOT_P5: None}  # an account without the old P5 Spot quota


# --- offerings ------------------------------------------------------------------------------------


def test_offered_everywhere_exits_0(moto, tmp_path, capsys):
    code, out, err = preflight(tmp_path, capsys, dev(), G_ONLY)
    assert (code, err) == (0, ""), f"expected exit 0 and no stderr, got {code}: {err}"
    assert "zones us-west-2a, us-west-2b" in out  # azCount 2: the first two zones moto lists, as the program picks
    assert "g5 (8 types), g6 (8 types)" in out
    assert "NVIDIA L4" in out and "NVIDIA A10G" in out
    assert "nothing blocks" in out and "warning" not in out


def test_a_zone_offering_none_of_the_families_is_a_warning(moto, tmp_path, capsys):
    # moto's us-west-2d offers no g5.
    code, out, err = preflight(tmp_path, capsys, dev(["us-west-2c", "us-west-2d"], ["g5"]), G_ONLY)
    assert code == 0, err
    assert (
        "warning: pool gpu: us-west-2d (usw2-az4) offers none of g5: its nodes can only launch in us-west-2c;"
        " to use another zone, pin network.availabilityZoneIds without it"
    ) in out
    assert "nothing blocks (1 warnings)" in out


def test_zones_pinned_by_id_are_checked_under_this_accounts_names(moto, tmp_path, capsys):
    # moto's us-east-1 maps use1-az3 to us-east-1e and use1-az1 to us-east-1b, and, like
    # AWS, offers none of today's families in use1-az3.
    config = in_region(dev(), "us-east-1")
    config[NETWORK]["availabilityZoneIds"] = ["use1-az3", "use1-az1"]
    code, out, err = preflight(tmp_path, capsys, config, G_ONLY)
    assert code == 0, err
    assert "zones us-east-1e, us-east-1b" in out
    for pool, families in (("cpu", "c7i, m7i"), ("gpu", "g5, g6"), ("gpu-shared", "g6")):
        assert (
            f"warning: pool {pool}: us-east-1e (use1-az3) offers none of {families}: its nodes can only launch in"
            " us-east-1b; to use another zone, pin network.availabilityZoneIds without it"
        ) in out


def test_a_pinned_zone_id_the_region_lacks_is_named(moto, tmp_path, capsys):
    config = dev()
    config[NETWORK]["availabilityZoneIds"] = ["usw2-az1", "usw2-az9"]
    code, _out, err = preflight(tmp_path, capsys, config, {}, amis={})  # stops before quotas and AMIs
    assert code == 1
    assert (
        "error: preflight for stack check in us-west-2 could not run: gpu-inference:network.availabilityZoneIds[1]"
        " is not a zone ID us-west-2 offers to this account (offered: usw2-az1, usw2-az2, usw2-az3, usw2-az4)"
        ' (got "usw2-az9")'
    ) in err


def test_a_family_offered_in_no_zone_is_a_warning_when_others_cover(moto, tmp_path, capsys):
    # moto's us-west-2 offers p5e in us-west-2c only.
    code, out, err = preflight(tmp_path, capsys, dev(["us-west-2a", "us-west-2b"], ["g5", "p5e"]), G_AND_P)
    assert code == 0, err
    assert "warning: pool gpu: family p5e is offered in none of us-west-2a, us-west-2b; only g5 can launch" in out


def test_families_offered_in_no_zone_block(moto, tmp_path, capsys):
    config = dev(["us-west-2a", "us-west-2b"], ["p5e"])
    config[POOLS]["gpu"]["maxGpus"] = 8  # p5e only comes with 8 GPUs
    code, _out, err = preflight(tmp_path, capsys, config, G_AND_P)
    assert code == 1
    assert (
        "blocker: pool gpu: no instance type of p5e is offered in us-west-2a, us-west-2b"
        " (found 0 zones, needed at least 1)"
    ) in err


def test_a_configured_zone_the_region_lacks_blocks(moto, tmp_path, capsys):
    code, _out, err = preflight(tmp_path, capsys, dev(["us-west-2a", "us-west-2z"]), G_ONLY)
    assert code == 1
    assert (
        "blocker: zone us-west-2z: is not an available zone of us-west-2"
        " (available: us-west-2a, us-west-2b, us-west-2c, us-west-2d)"
    ) in err


# --- quotas ------------------------------------------------------------------------------------------

# dev by hand, per quota (spot and on-demand alike; every g5/g6 size has 1, 4 or 8 GPUs):
#   gpu (maxGpus 4, maxCpu 96): most vCPUs per GPU is g6.16xlarge (and g5.16xlarge), 1 GPU / 64 vCPUs:
#       4 nodes x 64 = 256, capped at maxCpu 96 -> 96
#   gpu-shared (maxGpus 2, maxCpu 48): g6.48xlarge, 8 GPUs / 192 vCPUs: ceil(2/8) = 1 node, 192 -> 48
#   (g6.16xlarge: 2 x 64 = 128 -> 48 too)
#   both pools count against the same quota: 96 + 48 = 144
DEV_NEEDS = (
    "needed 144 (gpu 96: 4 x g6.16xlarge = 256, capped at maxCpu 96;"
    " gpu-shared 48: 1 x g6.48xlarge = 192, capped at maxCpu 48)"
)


def test_a_quota_below_what_the_pools_can_reach_blocks(moto, tmp_path, capsys):
    code, _out, err = preflight(tmp_path, capsys, dev(), {**G_ONLY, OD_G: 8.0})
    assert code == 1
    assert f"blocker: quota L-DB2E81BA: Running On-Demand G and VT instances: found 8 vCPUs, {DEV_NEEDS}" in err
    assert "L-3819A6DF" not in err  # the Spot quota is plenty


def test_a_quota_exactly_at_what_the_pools_can_reach_passes(moto, tmp_path, capsys):
    code, out, err = preflight(tmp_path, capsys, dev(), {OD_G: 144.0, SPOT_G: 144.0})
    assert (code, err) == (0, "")
    assert "nothing blocks" in out


def test_without_an_applied_value_the_aws_default_counts(moto, tmp_path, capsys):
    code, _out, err = preflight(tmp_path, capsys, dev(), {**G_ONLY, SPOT_G: ("default", 0.0)})
    assert code == 1
    assert (
        f"blocker: quota L-3819A6DF: All G and VT Spot Instance Requests: found 0 vCPUs (the AWS default), {DEV_NEEDS}"
        in err
    )


def test_a_quota_with_no_value_at_all_is_a_warning(moto, tmp_path, capsys):
    code, out, err = preflight(tmp_path, capsys, dev(), {**G_ONLY, SPOT_G: None})
    assert code == 0, err
    assert "warning: quota L-3819A6DF: All G and VT Spot Instance Requests: the account has no value for it" in out


def test_throttling_is_retried_with_backoff_then_succeeds(moto, tmp_path, capsys, sleeps):
    code, out, err = preflight(tmp_path, capsys, dev(), {**G_ONLY, SPOT_G: ("throttled", PLENTY)})
    assert (code, err) == (0, "")
    assert sleeps == [aws.BACKOFF_S]
    assert "nothing blocks" in out


def test_vcpus_to_reach_the_limits_by_hand():
    pool = settings_of(dev()).node_pools["gpu"]  # maxGpus 4, maxCpu 96
    g6 = {
        "xlarge": checks.InstanceFacts("g6.xlarge", 4, 1),
        "12xlarge": checks.InstanceFacts("g6.12xlarge", 48, 4),
        "48xlarge": checks.InstanceFacts("g6.48xlarge", 192, 8),
    }
    # xlarge: 4 nodes x 4 = 16; 12xlarge: 1 x 48 = 48 -> 48, uncapped
    need = checks.vcpus_to_reach_limits(pool, [g6["xlarge"], g6["12xlarge"]])
    assert need == checks.Need(48, "g6.12xlarge", 1, 48, 96)
    assert need.explain() == "1 x g6.12xlarge = 48"
    # 48xlarge: ceil(4/8) = 1 node, 192 vCPUs -> capped at maxCpu 96
    need = checks.vcpus_to_reach_limits(pool, g6.values())
    assert need == checks.Need(96, "g6.48xlarge", 1, 192, 96)
    assert need.explain() == "1 x g6.48xlarge = 192, capped at maxCpu 96"


@pytest.mark.parametrize(
    ("family", "capacity_type", "candidates"),
    [
        ("g6", "on-demand", (OD_G,)),
        ("g5g", "spot", (SPOT_G,)),
        ("p4d", "on-demand", (OD_P,)),
        ("p5", "on-demand", (OD_P,)),
        ("p4de", "spot", (SPOT_P,)),
        ("p5en", "spot", (SPOT_P5, SPOT_P)),
        ("c7i", "spot", ()),
    ],
)
def test_quota_candidates(family, capacity_type, candidates):
    assert checks.quota_candidates(family, capacity_type) == candidates


def _p_spot_facts(quotas: dict[str, checks.Quota]) -> tuple[Settings, checks.Facts]:
    """dev with pool gpu on p4d and p5, Spot only, maxGpus 16; everything else offered and present."""
    config = dev(["us-west-2a", "us-west-2b"])
    config[POOLS]["gpu"].update(instanceFamilies=["p4d", "p5"], capacityTypes=["spot"], maxGpus=16, maxCpu=10_000)
    settings = settings_of(config)
    types = {
        t.name: t
        for t in (
            checks.InstanceFacts("p4d.24xlarge", 96, 8),
            checks.InstanceFacts("p5.48xlarge", 192, 8),
            checks.InstanceFacts("g6.xlarge", 4, 1),
            checks.InstanceFacts("c7i.large", 2),
            checks.InstanceFacts("m7i.large", 2),
        )
    }
    g = {OD_G: checks.Quota(OD_G, "g on-demand", PLENTY), SPOT_G: checks.Quota(SPOT_G, "g spot", PLENTY)}
    facts = checks.Facts(
        region=REGION,
        zones=("us-west-2a", "us-west-2b"),
        region_zones=("us-west-2a", "us-west-2b"),
        instance_types=types,
        offerings=dict.fromkeys(("us-west-2a", "us-west-2b"), frozenset(types)),
        quotas={**quotas, **g},
        amis=dict.fromkeys(checks.ami_parameters(settings), AMI),
    )
    return settings, facts


def test_p5_spot_counts_against_its_own_quota_where_the_account_has_it():
    settings, facts = _p_spot_facts(
        {
            SPOT_P: checks.Quota(SPOT_P, "All P4, P3 and P2 Spot Instance Requests", 200),
            SPOT_P5: checks.Quota(SPOT_P5, "All P5 Spot Instance Requests", 384),
        }
    )
    report = checks.evaluate(settings, facts)
    # maxGpus 16: p4d.24xlarge 2 x 96 = 192; p5.48xlarge 2 x 192 = 384
    assert report.quotas[SPOT_P].needed == 192 and report.quotas[SPOT_P].ok
    assert report.quotas[SPOT_P5].needed == 384 and report.quotas[SPOT_P5].ok
    assert report.findings == []


def test_p5_spot_shares_the_p_quota_where_the_account_has_no_p5_quota():
    settings, facts = _p_spot_facts(
        {
            SPOT_P: checks.Quota(SPOT_P, "All P Spot Instance Requests", 200),
            SPOT_P5: checks.Quota(SPOT_P5, QUOTAS_P5_NAME, None, "missing"),
        }
    )
    report = checks.evaluate(settings, facts)
    assert SPOT_P5 not in report.quotas
    # one pool, one quota: its worst single type, p5.48xlarge 2 x 192 = 384 (not p4d's 192 + 384)
    assert [f.line() for f in report.findings] == [
        "blocker: quota L-7212CCBC: All P Spot Instance Requests: found 200 vCPUs, needed 384"
        " (gpu 384: 2 x p5.48xlarge = 384); request an increase in Service Quotas or lower the pools' maxGpus / maxCpu"
    ]


# --- AMIs -------------------------------------------------------------------------------------------------


def test_a_missing_ami_parameter_blocks(moto, tmp_path, capsys):
    # moto's own SSM: it has no EKS AMI parameters.
    code, _out, err = preflight(tmp_path, capsys, dev(), G_ONLY, amis=None)
    assert code == 1
    assert f"blocker: AMI of pools gpu, gpu-shared: SSM parameter {GPU_AMI} does not exist in us-west-2" in err
    assert "amazon-linux-2023/x86_64/standard/" in err  # the cpu pool's


def test_ami_parameters_follow_the_alias_version_and_architecture():
    config = dev()
    config[POOLS]["gpu"].update(instanceFamilies=["g5g"])  # arm64
    assert checks.ami_parameters(settings_of(config)) == {
        f"/aws/service/eks/optimized-ami/{DEV_K8S}/amazon-linux-2023/arm64/nvidia/"
        f"amazon-eks-node-al2023-arm64-nvidia-{DEV_K8S}-{versions.EKS_AMI_RELEASE}/image_id": ("gpu",),
        GPU_AMI: ("gpu-shared",),
        f"/aws/service/eks/optimized-ami/{DEV_K8S}/amazon-linux-2023/x86_64/standard/"
        f"amazon-eks-node-al2023-x86_64-standard-{DEV_K8S}-{versions.EKS_AMI_RELEASE}/image_id": ("cpu",),
    }


def test_an_unpinned_alias_reads_the_recommended_parameter():
    # Settings accept only pinned releases; `latest` is what Karpenter maps to `recommended`.
    assert ssm_parameter("al2023@latest", "1.34", "arm64", gpu=True) == (
        "/aws/service/eks/optimized-ami/1.34/amazon-linux-2023/arm64/nvidia/recommended/image_id"
    )


# --- output -----------------------------------------------------------------------------------------------


def test_json_output(moto, tmp_path, capsys):
    code, out, _err = preflight(tmp_path, capsys, dev(), {**G_ONLY, OD_G: 8.0}, args=("--json",))
    report = json.loads(out)
    assert code == 1 and report["ok"] is False
    assert report["zones"] == ["us-west-2a", "us-west-2b"]
    assert "g5.xlarge" in report["pools"]["gpu"]["offerings"]["us-west-2b"]
    assert report["instanceTypes"]["g6.xlarge"] | {"gpuMemoryMiB": 0} == {
        "family": "g6", "vcpus": 4, "gpus": 1, "gpuManufacturer": "NVIDIA", "gpuName": "L4", "gpuMemoryMiB": 0
    }  # fmt: skip
    quota = report["quotas"]["L-DB2E81BA"]
    assert (quota["found"], quota["needed"], quota["ok"]) == (8.0, 144, False)
    assert quota["pools"]["gpu"] == {"vcpus": 96, "instanceType": "g6.16xlarge", "instances": 4, "uncapped": 256}
    assert report["amis"][GPU_AMI] == {"imageId": AMI, "pools": ["gpu", "gpu-shared"]}
    assert [(b["quota"], b["found"], b["needed"]) for b in report["blockers"]] == [("L-DB2E81BA", 8.0, 144)]


# --- errors that stop the checks ---------------------------------------------------------------------------


def test_no_credentials_is_one_clear_line(tmp_path, capsys, monkeypatch):
    _no_aws_files(monkeypatch, tmp_path)
    assert main(["--stack", "dev"], session=boto3.Session(region_name=REGION)) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: preflight for stack dev in us-west-2 could not run: no AWS credentials found")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_an_unknown_profile_is_one_clear_line(tmp_path, capsys, monkeypatch):
    _no_aws_files(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_PROFILE", "nope")
    assert main(["--stack", "dev"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "error: preflight for stack dev in us-west-2 could not run: The config profile (nope) could not be found:"
        " check AWS_PROFILE and ~/.aws/config\n"
    )


def test_no_credentials_from_the_command_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    done = subprocess.run(
        [sys.executable, "-m", "tools.preflight", "--stack", "dev"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("error: preflight for stack dev in us-west-2 could not run: no AWS credentials")
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_an_unknown_region_is_named(moto, tmp_path, capsys):
    code, _out, err = preflight(tmp_path, capsys, stack_config("prod"), {}, amis={}, args=("--region", "us-weast-2"))
    assert code == 1
    assert "could not run: unknown AWS region 'us-weast-2'; known regions include" in err


def test_a_region_the_configured_zones_are_not_in_is_named(moto, tmp_path, capsys):
    code, _out, err = preflight(
        tmp_path, capsys, dev(["us-west-2a", "us-west-2b"]), {}, amis={}, args=("--region", "eu-west-1")
    )
    assert code == 1
    assert "network.availabilityZones us-west-2a, us-west-2b are not zones of region eu-west-1" in err


def _raising(code: str, operation: str = "DescribeInstanceTypes"):
    def describe_instance_types(**_):
        raise ClientError({"Error": {"Code": code, "Message": "nope"}}, operation)

    return describe_instance_types


def test_throttling_that_does_not_stop_is_a_clear_error(sleeps):
    with pytest.raises(
        aws.PreflightError, match=r"AWS kept throttling describe_instance_types \(RequestLimitExceeded\)"
    ):
        aws.call(_raising("RequestLimitExceeded"))
    assert sleeps == [aws.BACKOFF_S * 2**i for i in range(aws.THROTTLE_ROUNDS - 1)]  # 2, 4, 8 s


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (_raising("AuthFailure"), r"AWS rejected the credentials in the region \(AuthFailure: nope\)"),
        (_raising("UnauthorizedOperation"), r"not allowed to call describe_instance_types .* read-only permissions"),
        (_raising("InternalError"), r"describe_instance_types failed in the region \(InternalError: nope\)"),
    ],
)
def test_aws_errors_become_one_line(fn, message):
    with pytest.raises(aws.PreflightError, match=message):
        aws.call(fn)


def test_an_unreachable_endpoint_suggests_the_region():
    def unreachable(**_):
        raise EndpointConnectionError(endpoint_url="https://ec2.mars-east-1.amazonaws.com/")

    with pytest.raises(
        aws.PreflightError, match=r"cannot reach AWS at https://ec2\.mars-east-1\.amazonaws\.com/: check"
    ):
        aws.call(unreachable)


# --- invalid config -----------------------------------------------------------------------------------------


def test_invalid_config_exits_2_with_key_paths(tmp_path, capsys):
    config = dev()
    config[POOLS]["gpu"]["maxGPUs"] = 3
    path = tmp_path / "Pulumi.bad.yaml"
    path.write_text(yaml.safe_dump({"config": config}))
    assert main(["--stack", "bad", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: invalid stack config in {path}:")
    assert "nodePools.gpu.maxGPUs is not a known key" in err


def test_a_missing_stack_file_exits_2(tmp_path, capsys):
    assert main(["--stack", "nope", "--config", str(tmp_path / "Pulumi.nope.yaml")]) == 2
    assert "Pulumi.nope.yaml does not exist" in capsys.readouterr().err
