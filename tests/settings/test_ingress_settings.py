"""`ingress` and `inference.<svc>.expose`: every bad value is refused before any resource, naming its key.

One mutation of the dev stack per case (dev exposes llm directly and embed-small, which scales to
zero, through the interceptor, on an internal load balancer), then the exact messages. The last
test runs the plan command itself: exit 2, the messages on stderr, nothing written.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from domain.settings import ConfigError
from tests.conftest import run_plan, settings_of, stack_config
from tests.support.endpoints import OIDC
from tools.plan.run import ROOT

ING = "gpu-inference:ingress"
INF = "gpu-inference:inference"
CERT = "arn:aws:acm:us-west-2:123456789012:certificate/0f4b6a52-3c1d-4e8f-9a7b-2d5c8e1f6a30"


def _ingress(**changes) -> Callable[[dict], None]:
    def mutate(cfg: dict) -> None:
        for key, value in changes.items():
            if value is None:
                cfg[ING].pop(key, None)
            else:
                cfg[ING][key] = value

    return mutate


def _expose(service: str, value) -> Callable[[dict], None]:
    def mutate(cfg: dict) -> None:
        cfg[INF][service]["expose"] = value

    return mutate


CASES: list[tuple[str, Callable[[dict], None], list[str]]] = [
    (
        "expose without ingress",
        lambda cfg: cfg.pop(ING),
        [
            "gpu-inference:inference.embed-small.expose needs gpu-inference:ingress (the stack's load balancer:"
            ' scheme, certificateArn, allowedCidrs) (got {"host": "embed.dev.gpuinf.example.com", "path": "/"})',
            "gpu-inference:inference.llm.expose needs gpu-inference:ingress (the stack's load balancer:"
            ' scheme, certificateArn, allowedCidrs) (got {"host": "llm.dev.gpuinf.example.com", "path": "/"})',
        ],
    ),
    (
        "a host that is not a DNS name",
        _expose("llm", {"host": "llm_dev.example.com"}),
        [
            "gpu-inference:inference.llm.expose.host must be a DNS name in lowercase, such as chat.example.com"
            " (labels of a-z, 0-9, '-') (got \"llm_dev.example.com\")"
        ],
    ),
    (
        "a bare name is no host",
        _expose("llm", {"host": "llm"}),
        [
            "gpu-inference:inference.llm.expose.host must be a DNS name in lowercase, such as chat.example.com"
            " (labels of a-z, 0-9, '-') (got \"llm\")"
        ],
    ),
    (
        "a path with a wildcard",
        _expose("llm", {"host": "llm.dev.gpuinf.example.com", "path": "/v1/*"}),
        ['gpu-inference:inference.llm.expose.path must match ^/[A-Za-z0-9._~/-]*$ (got "/v1/*")'],
    ),
    (
        "two services on one host and path",
        _expose("qwen", {"host": "llm.dev.gpuinf.example.com"}),
        [
            "gpu-inference:inference.qwen.expose routes the same host and path as inference.llm.expose"
            ' (got {"host": "llm.dev.gpuinf.example.com", "path": "/"})'
        ],
    ),
    (
        "internet-facing without allowedCidrs",
        _ingress(scheme="internet-facing"),
        [
            "gpu-inference:ingress.allowedCidrs is required with scheme internet-facing: the CIDRs that may reach"
            " the load balancer (write 0.0.0.0/0 to open it to everyone) (got null)"
        ],
    ),
    (
        "a certificate of another region",
        _ingress(certificateArn=CERT.replace("us-west-2", "us-east-1")),
        [
            "gpu-inference:ingress.certificateArn must be a certificate of aws:region us-west-2: a load balancer"
            f' uses ACM certificates of its own region (got "{CERT.replace("us-west-2", "us-east-1")}")'
        ],
    ),
    (
        "not an ACM ARN",
        _ingress(certificateArn="arn:aws:iam::123456789012:server-certificate/dev"),
        [
            "gpu-inference:ingress.certificateArn must be an ACM certificate ARN,"
            " arn:aws:acm:<region>:<account>:certificate/<id>"
            ' (got "arn:aws:iam::123456789012:server-certificate/dev")'
        ],
    ),
    (
        "no certificate: HTTPS only",
        _ingress(certificateArn=None),
        ["gpu-inference:ingress.certificateArn is required"],
    ),
    (
        "CIDRs malformed and not canonical, each reported",
        _ingress(allowedCidrs=["10.0.0.0/33", "10.1.2.3/16", "192.0.2.0/24"]),
        [
            "gpu-inference:ingress.allowedCidrs[0] must be an IPv4 or IPv6 network in CIDR form such as"
            ' 203.0.113.0/24 (got "10.0.0.0/33")',
            'gpu-inference:ingress.allowedCidrs[1] must be written 10.1.0.0/16 (got "10.1.2.3/16")',
        ],
    ),
    (
        "repeated CIDR",
        _ingress(allowedCidrs=["192.0.2.0/24", "192.0.2.0/24"]),
        ['gpu-inference:ingress.allowedCidrs must not repeat ["192.0.2.0/24"]'],
    ),
    (
        "idle timeout shorter than a wake-up",
        _ingress(idleTimeoutSeconds=120),
        [
            "gpu-inference:ingress.idleTimeoutSeconds must be >= 630:"
            " inference.embed-small.scaling.coldStartTimeoutSeconds + 30, so the load balancer holds a request"
            " while embed-small wakes (got 120)"
        ],
    ),
    (
        "both oidc and cognito",
        _ingress(
            auth={
                "oidc": OIDC,
                "cognito": {
                    "userPoolArn": "arn:aws:cognito-idp:us-west-2:123456789012:userpool/us-west-2_Ab12Cd34E",
                    "userPoolClientId": "abc",
                    "userPoolDomain": "gpuinf-dev",
                },
            }
        ),
        ['gpu-inference:ingress.auth.oidc or cognito: set exactly one (got ["oidc", "cognito"])'],
    ),
    (
        "auth with neither",
        _ingress(auth={"onUnauthenticatedRequest": "deny"}),
        ["gpu-inference:ingress.auth.oidc or cognito: set exactly one (got [])"],
    ),
    (
        "an OIDC endpoint over plain HTTP",
        _ingress(auth={"oidc": {**OIDC, "tokenEndpoint": "http://login.example.com/token"}}),
        [
            "gpu-inference:ingress.auth.oidc.tokenEndpoint must match"
            ' ^https://[A-Za-z0-9.-]+(:\\d+)?(/[A-Za-z0-9._~/%-]*)?$ (got "http://login.example.com/token")'
        ],
    ),
    (
        "an unknown scheme",
        _ingress(scheme="public"),
        ["gpu-inference:ingress.scheme must be one of 'internal' or 'internet-facing' (got \"public\")"],
    ),
]


@pytest.mark.parametrize(("case", "mutate", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_ingress_config_is_rejected_with_exact_messages(case, mutate, expected):
    cfg = stack_config("dev")
    mutate(cfg)
    with pytest.raises(ConfigError) as caught:
        settings_of(cfg)
    assert caught.value.lines == expected, f"{case}: expected {expected}, found {caught.value.lines}"


def test_defaults_internal_scheme_vpc_range_and_an_idle_timeout_that_outlasts_a_wake_up():
    settings = settings_of("dev")
    assert settings.ingress is not None and settings.ingress.scheme == "internal"
    assert settings.ingress.allowed_cidrs is None  # the mapping puts the VPC's range
    assert settings.ingress.ssl_policy == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    assert sorted(settings.exposed) == ["embed-small", "llm"]
    cold_start = settings.inference["embed-small"].scaling.cold_start_timeout_seconds
    assert settings.load_balancer_idle_timeout == cold_start + 30
    cfg = stack_config("dev")
    cfg[INF]["embed-small"].pop("expose")
    assert settings_of(cfg).load_balancer_idle_timeout == 60  # ALB's default: nothing waits for a wake-up


def test_the_oidc_client_secret_is_a_secret_config_key_not_an_unknown_one():
    cfg = stack_config("dev")
    cfg[ING]["auth"] = {"oidc": OIDC}
    cfg["gpu-inference:ingressOidcClientSecret"] = "s3cr3t"
    settings = settings_of(cfg)
    assert settings.ingress is not None and settings.ingress.auth is not None
    assert settings.ingress.auth.kind == "oidc"
    assert "s3cr3t" not in settings.model_dump_json()  # the model holds the key's name only


def test_the_plan_exits_2_naming_the_key_and_writes_nothing(tmp_path):
    cfg_file = tmp_path / "Pulumi.bad.yaml"
    text = (ROOT / "Pulumi.dev.yaml").read_text().replace("host: llm.dev.gpuinf.example.com", "host: LLM")
    assert "host: LLM" in text
    cfg_file.write_text(text)
    out = tmp_path / "plan"
    proc = run_plan("--stack", "bad", "--config", str(cfg_file), "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    assert "gpu-inference:inference.llm.expose.host must be a DNS name in lowercase" in proc.stderr
    assert not out.exists()
