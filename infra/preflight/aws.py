"""The AWS calls of preflight: offerings, instance types, quotas, AMI parameters.

Every client gets botocore's standard retry mode (exponential backoff with
jitter on throttling and transient errors); `call()` adds a few more attempts
for throttling on top, then raises `PreflightError` with a readable message.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

from infra.preflight.checks import QUOTAS, Facts, InstanceFacts, ami_parameters
from infra.settings import Settings

RETRY = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=20)
THROTTLING = {"Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException"}


class PreflightError(Exception):
    """Something stops the checks themselves (credentials, region, API access)."""


def call(fn: Callable[..., Any], *, attempts: int = 4, base_delay_s: float = 0.5, **kwargs: Any) -> Any:
    """`fn(**kwargs)`, retried with exponential backoff while AWS throttles; errors made readable."""
    for attempt in range(attempts):
        try:
            return fn(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in THROTTLING and attempt + 1 < attempts:
                time.sleep(base_delay_s * 2**attempt)
                continue
            if code in THROTTLING:
                raise PreflightError(
                    f"AWS kept throttling {fn.__name__} after {attempts} attempts; try again later"
                ) from None
            if code in ("AuthFailure", "UnrecognizedClientException", "InvalidClientTokenId", "ExpiredToken"):
                raise PreflightError(f"AWS rejected the credentials ({code}): check the profile or session") from None
            if code in ("UnauthorizedOperation", "AccessDenied", "AccessDeniedException"):
                raise PreflightError(
                    f"not allowed to call {fn.__name__} ({code}): the preflight role needs it"
                ) from None
            raise
        except (NoCredentialsError, PartialCredentialsError):
            raise PreflightError(
                "no AWS credentials found (standard chain: environment, profile, SSO, instance role)"
            ) from None
        except EndpointConnectionError as exc:
            raise PreflightError(
                f"cannot reach AWS at {exc.kwargs.get('endpoint_url')}: is the region right?"
            ) from None
        except NoRegionError:
            raise PreflightError("no AWS region: pass --region or set aws:region in the stack") from None
    raise AssertionError("unreachable")


def _pages(client: Any, operation: str, key: str, **kwargs: Any) -> Iterable[dict]:
    paginator = client.get_paginator(operation)
    pages = call(lambda **kw: list(paginator.paginate(**kw)), **kwargs)
    for page in pages:
        yield from page.get(key, [])


def zones(ec2: Any, settings: Settings) -> tuple[str, ...]:
    """The zones the program uses: configured, or the first azCount the region offers (sorted)."""
    if settings.network.availability_zones:
        return tuple(settings.network.availability_zones)
    answer = call(
        ec2.describe_availability_zones,
        Filters=[
            {"Name": "state", "Values": ["available"]},
            {"Name": "opt-in-status", "Values": ["opt-in-not-required"]},
        ],
    )
    names = sorted(z["ZoneName"] for z in answer["AvailabilityZones"])
    if len(names) < settings.network.az_count:
        raise PreflightError(f"the region offers {len(names)} zones; network.azCount is {settings.network.az_count}")
    return tuple(names[: settings.network.az_count])


def offerings(ec2: Any, zone_names: tuple[str, ...], families: list[str]) -> dict[str, frozenset[str]]:
    found: dict[str, set[str]] = {z: set() for z in zone_names}
    rows = _pages(
        ec2,
        "describe_instance_type_offerings",
        "InstanceTypeOfferings",
        LocationType="availability-zone",
        # By zone only: the families are matched here (not every implementation of the
        # API expands `instance-type` wildcards).
        Filters=[{"Name": "location", "Values": list(zone_names)}],
    )
    wanted = set(families)
    for row in rows:
        if row["Location"] in found and row["InstanceType"].split(".")[0] in wanted:
            found[row["Location"]].add(row["InstanceType"])
    return {z: frozenset(types) for z, types in found.items()}


def instance_facts(ec2: Any, names: list[str]) -> dict[str, InstanceFacts]:
    facts: dict[str, InstanceFacts] = {}
    for start in range(0, len(names), 100):  # the API takes 100 names at a time
        for row in _pages(ec2, "describe_instance_types", "InstanceTypes", InstanceTypes=names[start : start + 100]):
            gpus = (row.get("GpuInfo") or {}).get("Gpus") or []
            facts[row["InstanceType"]] = InstanceFacts(
                name=row["InstanceType"],
                vcpus=int(row["VCpuInfo"]["DefaultVCpus"]),
                gpus=sum(int(g.get("Count", 0)) for g in gpus),
                gpu_model=" ".join(filter(None, [gpus[0].get("Manufacturer"), gpus[0].get("Name")])) if gpus else "",
                gpu_memory_gib=sum(g.get("MemoryInfo", {}).get("SizeInMiB", 0) for g in gpus[:1]) / 1024,
            )
    return facts


def quota(quotas_client: Any, code: str) -> float | None:
    """The account's applied value, else AWS's default; None when neither can be read."""
    for operation in (quotas_client.get_service_quota, quotas_client.get_aws_default_service_quota):
        try:
            return float(call(operation, ServiceCode="ec2", QuotaCode=code)["Quota"]["Value"])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchResourceException":
                raise PreflightError(f"Service Quotas {code}: {exc.response['Error'].get('Message', exc)}") from None
    return None


def ami(ssm: Any, parameter: str) -> str | None:
    try:
        return call(ssm.get_parameter, Name=parameter)["Parameter"]["Value"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ParameterNotFound":
            return None
        raise


def gather(session: Any, settings: Settings, region: str) -> Facts:
    try:
        ec2 = session.client("ec2", region_name=region, config=RETRY)
        quotas_client = session.client("service-quotas", region_name=region, config=RETRY)
        ssm = session.client("ssm", region_name=region, config=RETRY)
    except BotoCoreError as exc:
        raise PreflightError(f"cannot create AWS clients for {region}: {exc}") from None
    zone_names = zones(ec2, settings)
    wrong = [z for z in zone_names if not z.startswith(region)]
    if wrong:
        raise PreflightError(f"zones {', '.join(wrong)} are not in region {region}")
    families = sorted({f for p in settings.node_pools.values() for f in p.instance_families})
    offered = offerings(ec2, zone_names, families)
    names = sorted({t for types in offered.values() for t in types})
    return Facts(
        region=region,
        zones=zone_names,
        offerings=offered,
        instance_types=instance_facts(ec2, names) if names else {},
        quotas={code: quota(quotas_client, code) for code in QUOTAS if _needs(settings, code)},
        amis={parameter: ami(ssm, parameter) for parameter in ami_parameters(settings)},
    )


def _needs(settings: Settings, code: str) -> bool:
    from infra.preflight.checks import quota_code

    return any(
        quota_code(f, c) == code
        for p in settings.node_pools.values()
        if p.is_gpu
        for f in p.instance_families
        for c in p.capacity_types
    )
