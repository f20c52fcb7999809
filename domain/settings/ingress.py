"""`ingress` and `inference.<svc>.expose`: HTTPS endpoints through one Application Load Balancer.

The stack has at most one load balancer (an IngressGroup of the AWS Load Balancer
Controller, `infra/workloads/endpoints.py`); each exposed service is a host (and
optional path) on it. HTTPS only: the HTTP listener only redirects. Who may reach
it is `allowedCidrs`, enforced on the load balancer's security group; `auth` puts
OIDC or Cognito in front of every exposed service.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from domain.settings.base import ConfigModel, unique
from domain.settings.errors import field_error, raise_all, value_error
from domain.settings.patterns import CONFIG_KEY_NAME

# RFC 1123 host name: dot-separated labels of 1..63 letters, digits and '-', at most 253 characters;
# at least two labels (a bare name is no endpoint a client can resolve).
DNS_NAME = r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$"
# An ALB path rule (Ingress pathType Prefix): starts with '/', no wildcards or query.
PATH = r"^/[A-Za-z0-9._~/-]*$"
ACM_CERTIFICATE = r"^arn:aws(-cn|-us-gov)?:acm:(?P<region>[a-z]{2}(-[a-z]+)+-\d):\d{12}:certificate/[0-9a-f-]{36}$"
HTTPS_URL = r"^https://[A-Za-z0-9.-]+(:\d+)?(/[A-Za-z0-9._~/%-]*)?$"
COGNITO_POOL = r"^arn:aws(-cn|-us-gov)?:cognito-idp:[a-z]{2}(-[a-z]+)+-\d:\d{12}:userpool/[\w-]+_[0-9A-Za-z]+$"
# Current TLS 1.3 + 1.2 policies of ALB (Elastic Load Balancing docs, "Security policies for
# your Application Load Balancer"); the default allows no TLS 1.0/1.1.
SSL_POLICIES = (
    "ELBSecurityPolicy-TLS13-1-2-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-Res-2021-06",
    "ELBSecurityPolicy-TLS13-1-3-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-FIPS-2023-04",
    "ELBSecurityPolicy-TLS13-1-3-FIPS-2023-04",
)
# ALB's idle timeout bounds (load balancer attribute idle_timeout.timeout_seconds).
IDLE_TIMEOUT_MAX = 4000
OnUnauthenticated = Literal["authenticate", "deny", "allow"]


def _unique_or_none(value: tuple[str, ...] | None) -> tuple[str, ...] | None:
    return None if value is None else unique(value)


class OidcSettings(ConfigModel):
    """OIDC on the listener: ALB needs the provider's endpoints spelt out (it does no discovery)."""

    issuer: Annotated[str, Field(pattern=HTTPS_URL)]
    authorization_endpoint: Annotated[str, Field(alias="authorizationEndpoint", pattern=HTTPS_URL)]
    token_endpoint: Annotated[str, Field(alias="tokenEndpoint", pattern=HTTPS_URL)]
    user_info_endpoint: Annotated[str, Field(alias="userInfoEndpoint", pattern=HTTPS_URL)]
    client_id: Annotated[str, Field(alias="clientId", min_length=1, max_length=256)]
    # Name of a Pulumi secret config key holding the client secret (`pulumi config set --secret NAME`).
    client_secret: Annotated[str, Field(alias="clientSecret", pattern=CONFIG_KEY_NAME)]
    scope: Annotated[str, Field(min_length=1)] = "openid"


class CognitoSettings(ConfigModel):
    user_pool_arn: Annotated[str, Field(alias="userPoolArn", pattern=COGNITO_POOL)]
    user_pool_client_id: Annotated[str, Field(alias="userPoolClientId", min_length=1, max_length=128)]
    # The user pool's domain prefix (`<prefix>.auth.<region>.amazoncognito.com`) or custom domain.
    user_pool_domain: Annotated[str, Field(alias="userPoolDomain", min_length=1, max_length=253)]
    scope: Annotated[str, Field(min_length=1)] = "openid"


class AuthSettings(ConfigModel):
    """Exactly one of `oidc` or `cognito`."""

    oidc: OidcSettings | None = None
    cognito: CognitoSettings | None = None
    # Requests without a session: `authenticate` redirects to the login page (browsers),
    # `deny` answers 401 (API clients), `allow` lets them through with no identity.
    on_unauthenticated: Annotated[OnUnauthenticated, Field(alias="onUnauthenticatedRequest")] = "authenticate"
    session_timeout_seconds: Annotated[int, Field(alias="sessionTimeoutSeconds", ge=1, le=604_800)] = 3600

    @model_validator(mode="after")
    def _one(self) -> AuthSettings:
        if (self.oidc is None) == (self.cognito is None):
            raise_all([field_error("oidc", "or cognito: set exactly one (got {got})", self.kinds)])
        return self

    @property
    def kinds(self) -> list[str]:
        return [k for k, v in (("oidc", self.oidc), ("cognito", self.cognito)) if v is not None]

    @property
    def kind(self) -> Literal["oidc", "cognito"]:
        return "oidc" if self.oidc is not None else "cognito"

    @property
    def scope(self) -> str:
        """The claims asked of the provider that is set."""
        provider = self.oidc or self.cognito
        assert provider is not None  # exactly one is set
        return provider.scope


class IngressSettings(ConfigModel):
    scheme: Literal["internal", "internet-facing"] = "internal"
    certificate_arn: Annotated[str, Field(alias="certificateArn")]
    # Who may reach the load balancer (its security group). Default: the VPC's own range for
    # `internal`; required for `internet-facing` (an open 0.0.0.0/0 must be written out).
    allowed_cidrs: Annotated[
        tuple[str, ...] | None, Field(alias="allowedCidrs", min_length=1), AfterValidator(_unique_or_none)
    ] = None
    ssl_policy: Annotated[Literal[SSL_POLICIES], Field(alias="sslPolicy")] = SSL_POLICIES[0]  # type: ignore[valid-type]
    # At least every exposed scale-to-zero service's coldStartTimeoutSeconds + 30 (the interceptor
    # holds a request that long with no byte sent); that is also the default.
    idle_timeout_seconds: Annotated[int | None, Field(alias="idleTimeoutSeconds", ge=1, le=IDLE_TIMEOUT_MAX)] = None
    auth: AuthSettings | None = None

    @field_validator("certificate_arn")
    @classmethod
    def _certificate(cls, value: str) -> str:
        if not re.match(ACM_CERTIFICATE, value):
            raise value_error(
                "certificateArn",
                "must be an ACM certificate ARN, arn:aws:acm:<region>:<account>:certificate/<id> (got {got})",
                value,
            )
        return value

    @model_validator(mode="after")
    def _cidrs(self) -> IngressSettings:
        problems: list[PydanticCustomError] = []
        for i, cidr in enumerate(self.allowed_cidrs or ()):
            try:
                network = ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                problems.append(
                    field_error(
                        f"allowedCidrs[{i}]",
                        "must be an IPv4 or IPv6 network in CIDR form such as 203.0.113.0/24 (got {got})",
                        cidr,
                    )
                )
                continue
            if str(network) != cidr:
                problems.append(field_error(f"allowedCidrs[{i}]", f"must be written {network} (got {{got}})", cidr))
        raise_all(problems)
        return self

    @property
    def certificate_region(self) -> str:
        found = re.match(ACM_CERTIFICATE, self.certificate_arn)
        assert found is not None  # validated
        return found["region"]

    @property
    def open_to_all(self) -> bool:
        return any(ipaddress.ip_network(c).prefixlen == 0 for c in self.allowed_cidrs or ())


class ExposeSettings(ConfigModel):
    """`inference.<svc>.expose`: the service's host (and path) on the stack's load balancer."""

    host: str
    path: Annotated[str, Field(pattern=PATH)] = "/"

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not re.match(DNS_NAME, value):
            raise value_error(
                "host",
                "must be a DNS name in lowercase, such as chat.example.com (labels of a-z, 0-9, '-') (got {got})",
                value,
            )
        return value


def region_problems(ingress: IngressSettings, region: str) -> list[PydanticCustomError]:
    """ALB takes certificates from ACM in its own region only."""
    if ingress.certificate_region == region:
        return []
    return [
        field_error(
            "ingress.certificateArn",
            f"must be a certificate of aws:region {region}: a load balancer uses ACM certificates of its own region"
            " (got {got})",
            ingress.certificate_arn,
        )
    ]
