"""The AWS calls of preflight: zones, instance types and their offerings, quotas, AMI parameters.

Every client uses botocore's standard retry mode (exponential backoff with
jitter on throttling and transient errors, `MAX_ATTEMPTS` tries per request).
`call()` adds a few slower rounds on top for throttling, since a whole-account
rate limit can outlast botocore's short backoff, then gives up with a
`PreflightError`: one readable line, like every other failure that stops the
checks themselves (credentials, region, permissions, network).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterator
from typing import Any

from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
)

from domain.settings import ConfigError, Settings
from tools.preflight import reservations
from tools.preflight.checks import QUOTAS, Facts, InstanceFacts, Quota, ami_parameters, needed_quota_codes

MAX_ATTEMPTS = 5  # botocore's, per request
THROTTLE_ROUNDS = 4  # ours, each a full botocore round
BACKOFF_S = 2.0  # our first pause; doubles each round (2, 4, 8 s)
CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS}, connect_timeout=5, read_timeout=20)
THROTTLING = {"Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException"}
REJECTED = {
    "AuthFailure",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "OptInRequired",
}
DENIED = {"UnauthorizedOperation", "AccessDenied", "AccessDeniedException"}
CHUNK = 100  # instance type names per offerings request
PROFILE_HINT = "check AWS_PROFILE and ~/.aws/config"
# What EC2 answers DescribeCapacityReservations for an ID it does not have (a finding, not a failure).
MISSING_RESERVATION = frozenset({"InvalidCapacityReservationId.NotFound", "InvalidCapacityReservationId.Malformed"})


class PreflightError(Exception):
    """Something stops the checks themselves (credentials, region, permissions, throttling)."""


def call(fn: Callable[..., Any], /, *, expected: frozenset[str] = frozenset(), **kwargs: Any) -> Any:
    """`fn(**kwargs)`, retried while AWS throttles; AWS errors become `PreflightError`s.

    ClientErrors whose code is in `expected` are raised unchanged for the caller
    to handle (a missing quota or parameter is a finding, not a failure).
    """
    operation = getattr(fn, "__name__", "the AWS call")
    client_meta = getattr(getattr(fn, "__self__", None), "meta", None)
    region = getattr(client_meta, "region_name", None) or "the region"
    for round_ in range(THROTTLE_ROUNDS):
        try:
            return fn(**kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code, message = error.get("Code", ""), error.get("Message", "")
            if code in expected:
                raise
            if code in THROTTLING:
                if round_ + 1 < THROTTLE_ROUNDS:
                    time.sleep(BACKOFF_S * 2**round_)
                    continue
                raise PreflightError(
                    f"AWS kept throttling {operation} ({code}) after {THROTTLE_ROUNDS} rounds of"
                    f" {MAX_ATTEMPTS} attempts; wait a few minutes and run preflight again"
                ) from None
            if code in REJECTED:
                raise PreflightError(
                    f"AWS rejected the credentials in {region} ({code}: {message}): check the profile or"
                    f" session, and that {region} is enabled for the account"
                ) from None
            if code in DENIED:
                raise PreflightError(
                    f"not allowed to call {operation} in {region} ({code}): the preflight role needs the"
                    " read-only permissions listed in the README"
                ) from None
            raise PreflightError(f"{operation} failed in {region} ({code}: {message})") from None
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise PreflightError(_no_credentials(exc)) from None
        except (EndpointConnectionError, ConnectTimeoutError) as exc:
            raise PreflightError(
                f"cannot reach AWS at {exc.kwargs.get('endpoint_url')}: check the region ({region}) and the network"
            ) from None
        except NoRegionError:
            raise PreflightError("no AWS region: pass --region or set aws:region in the stack") from None
        except BotoCoreError as exc:
            raise PreflightError(f"{operation} failed in {region}: {exc}") from None
    raise AssertionError("unreachable")


def _no_credentials(exc: Exception | None = None) -> str:
    why = f" ({exc})" if isinstance(exc, PartialCredentialsError) else ""
    return (
        f"no AWS credentials found{why}: set them up for the standard chain"
        " (AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, SSO login, or an instance/web-identity role)"
    )


def pages(fn: Callable[..., Any], key: str, **kwargs: Any) -> Iterator[dict]:
    """Items under `key` across every page (NextToken), each page retried on its own."""
    token: str | None = None
    while True:
        page = call(fn, **kwargs, **({"NextToken": token} if token else {}))
        yield from page.get(key, [])
        token = page.get("NextToken")
        if not token:
            return


def default_session() -> Any:
    """A boto3 session on the standard credential chain (AWS_PROFILE and the like)."""
    import boto3

    try:
        return boto3.Session()
    except BotoCoreError as exc:  # e.g. ProfileNotFound for a misspelt AWS_PROFILE
        raise PreflightError(f"{exc}: {PROFILE_HINT}") from None


def check_region(session: Any, region: str) -> None:
    """Refuse a region botocore does not know in any partition (a typo would otherwise time out)."""
    known = {r for p in session.get_available_partitions() for r in session.get_available_regions("ec2", p)}
    if region not in known:
        near = sorted(r for r in known if r.split("-")[0] == region.split("-")[0])[:8]
        hint = f"; known regions include {', '.join(near)}" if near else ""
        raise PreflightError(f"unknown AWS region {region!r}{hint}")


def check_credentials(session: Any) -> None:
    try:
        credentials = session.get_credentials()
    except (PartialCredentialsError, NoCredentialsError) as exc:
        raise PreflightError(_no_credentials(exc)) from None
    except ProfileNotFound as exc:  # botocore may defer it to the first credential lookup
        raise PreflightError(f"{exc}: {PROFILE_HINT}") from None
    except BotoCoreError as exc:  # an expired SSO token, a failing credential_process, ...
        raise PreflightError(f"cannot load AWS credentials: {exc}") from None
    if credentials is None:
        raise PreflightError(_no_credentials())


def zones(ec2: Any, settings: Settings, region: str) -> tuple[tuple[str, ...], tuple[str, ...], dict[str, str]]:
    """(zones the stack uses, every available zone of the region, zone name -> zone ID).

    Like the program (`__main__.py`): the configured zones, or those of the
    configured zone IDs, else the first `azCount` of the available zones that
    need no opt-in, sorted by name.
    """
    answer = call(ec2.describe_availability_zones, Filters=[{"Name": "state", "Values": ["available"]}])
    rows = [z for z in answer["AvailabilityZones"] if z.get("ZoneType", "availability-zone") == "availability-zone"]
    available = tuple(sorted(z["ZoneName"] for z in rows))
    ids = {z["ZoneName"]: z.get("ZoneId", "") for z in rows}
    if settings.network.availability_zones:
        return tuple(settings.network.availability_zones), available, ids
    if settings.network.availability_zone_ids:
        try:
            pinned = settings.network.zones_for_ids(list(ids.values()), list(ids), region)
        except ConfigError as exc:
            raise PreflightError("; ".join(exc.lines)) from None
        return tuple(pinned), available, ids
    default = sorted(
        z["ZoneName"] for z in rows if z.get("OptInStatus", "opt-in-not-required") == "opt-in-not-required"
    )
    if len(default) < settings.network.az_count:
        raise PreflightError(
            f"network.azCount is {settings.network.az_count} but the region offers {len(default)} zones"
            f" ({', '.join(default)})"
        )
    return tuple(default[: settings.network.az_count]), available, ids


def instance_types(ec2: Any, families: list[str]) -> dict[str, InstanceFacts]:
    """Every instance type of `families` the region has (a wildcard per family: `g6.*` is not `g6e.*`)."""
    rows = pages(
        ec2.describe_instance_types,
        "InstanceTypes",
        Filters=[{"Name": "instance-type", "Values": [f"{f}.*" for f in families]}],
    )
    found: dict[str, InstanceFacts] = {}
    for row in rows:
        gpus = (row.get("GpuInfo") or {}).get("Gpus") or [{}]
        first = gpus[0]
        found[row["InstanceType"]] = InstanceFacts(
            name=row["InstanceType"],
            vcpus=int(row["VCpuInfo"]["DefaultVCpus"]),
            gpus=sum(int(g.get("Count", 0)) for g in gpus),
            gpu_manufacturer=first.get("Manufacturer", ""),
            gpu_name=first.get("Name", ""),
            gpu_memory_mib=int((first.get("MemoryInfo") or {}).get("SizeInMiB", 0)),
        )
    return dict(sorted(found.items()))


def offerings(ec2: Any, zone_names: tuple[str, ...], names: list[str]) -> dict[str, frozenset[str]]:
    """zone -> which of `names` it offers.

    Filtered by the exact names `instance_types` found (which AWS matches the
    same as the family wildcards, and which moto also understands: it compares
    `instance-type` filter values literally).
    """
    found: dict[str, set[str]] = {z: set() for z in zone_names}
    for start in range(0, len(names), CHUNK):
        for row in pages(
            ec2.describe_instance_type_offerings,
            "InstanceTypeOfferings",
            LocationType="availability-zone",
            Filters=[
                {"Name": "instance-type", "Values": names[start : start + CHUNK]},
                {"Name": "location", "Values": list(zone_names)},
            ],
        ):
            if row["Location"] in found:
                found[row["Location"]].add(row["InstanceType"])
    return {z: frozenset(types) for z, types in found.items()}


def quota(client: Any, code: str) -> Quota:
    """The account's applied value, else AWS's default for it; `value=None` when it has neither."""
    for operation, source in ((client.get_service_quota, "applied"), (client.get_aws_default_service_quota, "default")):
        try:
            answer = call(operation, expected=frozenset({"NoSuchResourceException"}), ServiceCode="ec2", QuotaCode=code)
        except ClientError:
            continue
        found = answer["Quota"]
        return Quota(code, found.get("QuotaName") or QUOTAS[code], float(found["Value"]), source)
    return Quota(code, QUOTAS[code], None, "missing")


def ami(ssm: Any, parameter: str) -> str | None:
    try:
        return call(ssm.get_parameter, expected=frozenset({"ParameterNotFound"}), Name=parameter)["Parameter"]["Value"]
    except ClientError:
        return None


def capacity_reservations(ec2: Any, settings: Settings) -> dict[str, dict[str, tuple[reservations.Reservation, ...]]]:
    """pool -> term -> the reservations it selects (empty: none; a missing ID is an empty tuple, not an error)."""
    found: dict[str, dict[str, tuple[reservations.Reservation, ...]]] = {}
    for name, pool in reservations.reserved_pools(settings).items():
        found[name] = {}
        for term in pool.capacity_reservations or ():
            if term.id:
                try:
                    answer = call(
                        ec2.describe_capacity_reservations,
                        expected=MISSING_RESERVATION,
                        CapacityReservationIds=[term.id],
                    )
                    rows = answer.get("CapacityReservations", [])
                except ClientError:
                    rows = []
            else:
                filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in sorted((term.tags or {}).items())]
                # `*` selects every value of a tag key (the EC2NodeClass term semantics): tag-key filter.
                filters = [
                    {"Name": "tag-key", "Values": [f["Name"][4:]]} if f["Values"] == ["*"] else f for f in filters
                ]
                rows = list(pages(ec2.describe_capacity_reservations, "CapacityReservations", Filters=filters))
            found[name][reservations.term_text(term)] = tuple(reservations.parse(r) for r in rows)
    return found


def gather(session: Any, settings: Settings, region: str) -> Facts:
    check_region(session, region)
    check_credentials(session)
    try:
        ec2, quotas_client, ssm = (
            session.client(service, region_name=region, config=CLIENT_CONFIG)
            for service in ("ec2", "service-quotas", "ssm")
        )
    except BotoCoreError as exc:
        raise PreflightError(f"cannot create AWS clients for {region}: {exc}") from None
    used, available, zone_ids = zones(ec2, settings, region)
    wrong = [z for z in used if not z.startswith(region)]
    if wrong:
        raise PreflightError(
            f"network.availabilityZones {', '.join(wrong)} are not zones of region {region}:"
            " check --region against the stack's aws:region"
        )
    families = sorted({f for p in settings.node_pools.values() for f in p.instance_families})
    types = instance_types(ec2, families)
    return Facts(
        region=region,
        zones=used,
        region_zones=available,
        zone_ids={z: zone_ids[z] for z in used if zone_ids.get(z)},
        instance_types=types,
        offerings=offerings(ec2, used, list(types)) if types else {z: frozenset() for z in used},
        quotas={code: quota(quotas_client, code) for code in needed_quota_codes(settings)},
        amis={parameter: ami(ssm, parameter) for parameter in ami_parameters(settings)},
        reservations=capacity_reservations(ec2, settings),
        now=datetime.datetime.now(datetime.UTC),
    )
