"""`python -m infra.preflight` against moto, for every branch.

What moto covers: EC2 availability zones, `describe_instance_type_offerings`
(per-AZ offerings with real regional gaps: in us-west-2, p5e only in
us-west-2c) and `describe_instance_types` (vCPUs, GpuInfo). What it lacks, and
is stubbed with botocore's Stubber (request parameters still checked against
the service model): Service Quotas for EC2 quota codes (moto answers
NoSuchResourceException and has no `get_aws_default_service_quota`) and the
public SSM parameters of EKS AMIs (moto refuses to create `/aws/...` names).
"""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from botocore.stub import Stubber
from moto import mock_aws

from infra.preflight import aws, checks
from infra.preflight.__main__ import main
from infra.settings import Settings, raw_from_stack_config
from tests.conftest import stack_config

REGION = "us-west-2"
NP = "gpu-inference:nodePools"


@pytest.fixture
def creds(monkeypatch):
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(key, value)


class Session:
    """A boto3 session whose Service Quotas and SSM clients are stubbed; EC2 is moto's."""

    def __init__(self, quotas: dict[str, float | None], amis: dict[str, str | None], settings: Settings):
        self.real = boto3.Session(region_name=REGION)
        self.stubs: list[Stubber] = []
        self.quotas = self._stub("service-quotas")
        for code in checks.QUOTAS:
            if not aws._needs(settings, code):
                continue
            value = quotas.get(code)
            params = {"ServiceCode": "ec2", "QuotaCode": code}
            if value is None:
                self.quotas.add_client_error("get_service_quota", "NoSuchResourceException", expected_params=params)
                self.quotas.add_client_error(
                    "get_aws_default_service_quota", "NoSuchResourceException", expected_params=params
                )
            else:
                self.quotas.add_response("get_service_quota", {"Quota": {"QuotaCode": code, "Value": value}}, params)
        self.ssm = self._stub("ssm")
        for parameter in checks.ami_parameters(settings):
            image = amis.get(parameter, "ami-0123456789abcdef0")
            if image is None:
                self.ssm.add_client_error("get_parameter", "ParameterNotFound", expected_params={"Name": parameter})
            else:
                self.ssm.add_response(
                    "get_parameter", {"Parameter": {"Name": parameter, "Value": image}}, {"Name": parameter}
                )

    def _stub(self, service: str) -> Stubber:
        client = self.real.client(service, region_name=REGION)
        stub = Stubber(client)
        stub.activate()
        self.stubs.append(stub)
        setattr(self, f"_{service.replace('-', '_')}_client", client)
        return stub

    def client(self, service: str, **kwargs):
        if service == "service-quotas":
            return self._service_quotas_client
        if service == "ssm":
            return self._ssm_client
        return self.real.client(service, **kwargs)


def settings_of(config: dict) -> Settings:
    return Settings.from_raw(raw_from_stack_config(config))


def run(tmp_path, config: dict, capsys, quotas=None, amis=None, extra=()):
    import yaml

    path = tmp_path / "Pulumi.check.yaml"
    path.write_text(yaml.safe_dump({"config": config}))
    settings = settings_of(config)
    plenty = {code: 10_000.0 for code in checks.QUOTAS}
    session = Session({**plenty, **(quotas or {})}, amis or {}, settings)
    code = main(["--stack", "check", "--config", str(path), *extra], session=session)
    out = capsys.readouterr()
    for stub in session.stubs:
        stub.assert_no_pending_responses()
    return code, out.out, out.err


def one_gpu_family(zones: list[str], family: str) -> dict:
    config = stack_config("dev")
    config["gpu-inference:network"]["availabilityZones"] = zones
    config[NP]["gpu"]["instanceFamilies"] = [family]
    config[NP]["gpu"]["maxGpus"] = 8
    config[NP]["gpu"]["maxCpu"] = 192
    config[NP]["gpu"]["capacityTypes"] = ["on-demand"]
    config["gpu-inference:inference"]["llm"]["pool"] = "gpu"
    return config


@mock_aws
def test_offered_everywhere_with_enough_quota_exits_0(tmp_path, capsys, creds):
    code, out, err = run(tmp_path, stack_config("dev"), capsys)
    assert code == 0, err
    assert "nothing blocks" in out
    assert "g6.xlarge" in out and "NVIDIA L4" in out
    assert "L-DB2E81BA" in out and "L-3819A6DF" in out  # dev allows spot and on-demand G


@mock_aws
def test_missing_in_one_zone_is_a_warning(tmp_path, capsys, creds):
    # moto's us-west-2 offers p5e in us-west-2c only.
    code, out, err = run(tmp_path, one_gpu_family(["us-west-2b", "us-west-2c"], "p5e"), capsys)
    assert code == 0, err
    assert (
        "warning: pool gpu: us-west-2b offers none of p5e: Karpenter can only launch these nodes in us-west-2c" in out
    )


@mock_aws
def test_missing_everywhere_is_a_blocker(tmp_path, capsys, creds):
    code, _out, err = run(tmp_path, one_gpu_family(["us-west-2a", "us-west-2b"], "p5e"), capsys)
    assert code == 1
    assert "blocker: pool gpu: no instance type of p5e is offered in any of us-west-2a, us-west-2b" in err


@mock_aws
def test_quota_too_low_names_the_quota_found_and_needed(tmp_path, capsys, creds):
    # By hand, dev's pools at their limits, on-demand G and VT:
    #   gpu (g5, g6; maxGpus 4, maxCpu 96): e.g. g5.8xlarge, 1 GPU / 32 vCPUs: 4 x 32 = 128, capped at 96 -> 96
    #   gpu-shared (g6; maxGpus 2, maxCpu 48): g6.8xlarge: 2 x 32 = 64, capped at 48 -> 48
    #   together 144 vCPUs.
    code, _out, err = run(tmp_path, stack_config("dev"), capsys, quotas={"L-DB2E81BA": 8.0})
    assert code == 1
    assert (
        "blocker: quota L-DB2E81BA: Running On-Demand G and VT instances is 8 vCPUs; the pool limits can reach 144"
        " (gpu 96, gpu-shared 48)"
    ) in err


@mock_aws
def test_quota_falls_back_to_the_aws_default(creds):
    client = boto3.client("service-quotas", region_name=REGION)
    stub = Stubber(client)
    params = {"ServiceCode": "ec2", "QuotaCode": "L-417A185B"}
    stub.add_client_error("get_service_quota", "NoSuchResourceException", expected_params=params)
    stub.add_response("get_aws_default_service_quota", {"Quota": {"Value": 0.0}}, params)
    with stub:
        assert aws.quota(client, "L-417A185B") == 0.0


@mock_aws
def test_unreadable_quota_is_a_warning(tmp_path, capsys, creds):
    code, out, err = run(tmp_path, stack_config("dev"), capsys, quotas={"L-3819A6DF": None})
    assert code == 0, err
    assert "warning: quota L-3819A6DF: All G and VT Spot Instance Requests: could not be read" in out


@mock_aws
def test_missing_ami_parameter_is_a_blocker(tmp_path, capsys, creds):
    config = stack_config("dev")
    settings = settings_of(config)
    gpu_parameter = next(p for p, pools in checks.ami_parameters(settings).items() if "gpu" in pools)
    assert gpu_parameter == (
        "/aws/service/eks/optimized-ami/1.34/amazon-linux-2023/x86_64/nvidia/"
        "amazon-eks-node-al2023-x86_64-nvidia-1.34-v20260512/image_id"
    )
    code, _out, err = run(tmp_path, config, capsys, amis={gpu_parameter: None})
    assert code == 1
    assert f"AMI parameter {gpu_parameter} does not exist in us-west-2" in err


@mock_aws
def test_json_output(tmp_path, capsys, creds):
    code, out, _ = run(tmp_path, stack_config("dev"), capsys, quotas={"L-DB2E81BA": 8.0}, extra=("--json",))
    report = json.loads(out)
    assert code == 1 and report["ok"] is False
    assert report["quotas"]["L-DB2E81BA"] == {
        "name": "Running On-Demand G and VT instances",
        "found": 8.0,
        "needed": 144,
        "pools": {"gpu": 96, "gpu-shared": 48},
    }
    assert report["coverage"]["gpu"]["us-west-2a"]
    assert report["instanceTypes"]["g6.xlarge"]["gpus"] == 1


def test_no_credentials_is_one_clear_line(tmp_path, capsys, monkeypatch):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert main(["--stack", "dev"], session=boto3.Session(region_name=REGION)) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no AWS credentials found") and "Traceback" not in err


@mock_aws
def test_zones_of_another_region_are_refused(creds):
    config = stack_config("dev")
    config["gpu-inference:network"]["availabilityZones"] = ["us-west-2a", "us-west-2b"]
    with pytest.raises(aws.PreflightError, match="zones us-west-2a, us-west-2b are not in region eu-west-1"):
        aws.gather(boto3.Session(), settings_of(config), "eu-west-1")


def test_throttling_is_retried_with_backoff_then_succeeds():
    calls = []

    def flaky(**kwargs):
        calls.append(kwargs)
        if len(calls) < 3:
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "GetServiceQuota")
        return {"ok": True}

    assert aws.call(flaky, base_delay_s=0.001, QuotaCode="x") == {"ok": True}
    assert len(calls) == 3


def test_throttling_that_never_ends_is_a_clear_error():
    def throttled(**_):
        raise ClientError({"Error": {"Code": "RequestLimitExceeded", "Message": "slow down"}}, "DescribeInstanceTypes")

    with pytest.raises(aws.PreflightError, match="AWS kept throttling throttled after 4 attempts"):
        aws.call(throttled, base_delay_s=0.001)


def test_unreachable_endpoint_suggests_the_region():
    def unreachable(**_):
        raise EndpointConnectionError(endpoint_url="https://ec2.mars-east-1.amazonaws.com/")

    with pytest.raises(aws.PreflightError, match="is the region right"):
        aws.call(unreachable)


def test_invalid_config_exits_2(tmp_path, capsys):
    import yaml

    config = stack_config("dev")
    config[NP]["gpu"]["maxGPUs"] = 3
    path = tmp_path / "Pulumi.bad.yaml"
    path.write_text(yaml.safe_dump({"config": config}))
    assert main(["--stack", "bad", "--config", str(path)]) == 2
    assert "nodePools.gpu.maxGPUs is not a known key" in capsys.readouterr().err


def test_vcpus_to_reach_limits_by_hand():
    pool = settings_of(stack_config("dev")).node_pools["gpu"]  # maxGpus 4, maxCpu 96
    types = [checks.InstanceFacts("g6.xlarge", 4, 1), checks.InstanceFacts("g6.12xlarge", 48, 4)]
    # g6.xlarge: 4 instances x 4 vCPUs = 16; g6.12xlarge: 1 x 48 = 48 -> 48
    assert checks.vcpus_to_reach_limits(pool, types) == 48
    types.append(checks.InstanceFacts("g6.48xlarge", 192, 8))  # 1 x 192, capped at maxCpu 96
    assert checks.vcpus_to_reach_limits(pool, types) == 96


@pytest.mark.parametrize(
    ("family", "capacity", "code"),
    [("g6", "on-demand", "L-DB2E81BA"), ("g5", "spot", "L-3819A6DF"), ("p4d", "on-demand", "L-417A185B"),
     ("p4d", "spot", "L-7212CCBC"), ("p5", "spot", "L-C4BD4855"), ("p5en", "on-demand", "L-417A185B"), ("c7i", "spot", None)],
)  # fmt: skip
def test_quota_codes(family, capacity, code):
    assert checks.quota_code(family, capacity) == code
