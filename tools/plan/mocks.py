"""Recording mocks: every registered resource with its type, name, parent and
inputs, and plausible, deterministic answers to invokes and packaged components.

Used by the offline plan and by the tests (one implementation).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc

ACCOUNT_ID = "123456789012"
# Standard (non-opt-in) zones of a few regions, so `azCount` errors look as they would
# on AWS; other regions get 3.
ZONE_COUNTS = {"us-east-1": 6, "us-west-2": 4, "us-east-2": 3, "eu-west-1": 3, "eu-central-1": 3}
SECRET = "[secret]"


@dataclass
class Recorded:
    urn: str
    type: str
    name: str
    parent: str
    custom: bool
    provider: str
    providers: dict[str, str]  # a component's provider map (children inherit it)
    dependencies: list[str]  # depends_on and property dependencies, component children expanded by the SDK
    inputs: dict[str, Any] = field(default_factory=dict)
    # The two other edges Pulumi's delete order follows (tests/support/delete_order.py);
    # left out of as_json while empty, so plan files stay as they were.
    deleted_with: str = ""
    replace_with: list[str] = field(default_factory=list)
    # Resource options that change what `up` and `destroy` do (ignoreChanges,
    # retainOnDelete, customTimeouts, protect), only those set.
    options: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        edges = {"deletedWith": self.deleted_with, "replaceWith": self.replace_with}
        return {
            "urn": self.urn,
            "type": self.type,
            "name": self.name,
            "parent": self.parent,
            "custom": self.custom,
            "provider": self.provider,
            "providers": self.providers,
            "dependencies": self.dependencies,
            "inputs": self.inputs,
            **{key: value for key, value in edges.items() if value},
            **({"options": self.options} if self.options else {}),
        }


def plain(value: Any) -> Any:
    """Deserialized inputs -> JSON-safe data: secrets redacted, integral floats back to ints
    (numbers cross the mock monitor as protobuf doubles)."""
    if isinstance(value, dict):
        if value.get(rpc._special_sig_key) == rpc._special_secret_sig:
            return _redacted(value.get("value"))
        # Sorted: the mock monitor's protobuf maps do not keep insertion order.
        return {k: plain(value[k]) for k in sorted(value)}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _redacted(value: Any) -> Any:
    """A secret's shape with every leaf replaced: a Secret's keys stay visible, its values do not."""
    if isinstance(value, dict) and value.get(rpc._special_sig_key) != rpc._special_secret_sig:
        return {k: _redacted(value[k]) for k in sorted(value)}
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    return SECRET


def _short_hash(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:17]


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self, region: str = "us-west-2") -> None:
        self.region = region

    # --- resources ---------------------------------------------------------
    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict]:
        inputs = dict(args.inputs)
        outputs = {**inputs, **self._outputs(args.typ, args.name, inputs)}
        if not args.custom and not args.typ.startswith(("eks:", "kubernetes:")):
            return None, outputs  # our own components have no id
        return outputs.pop("__id", f"{args.name}-{_short_hash(args.typ, args.name)[:8]}"), outputs

    def _outputs(self, typ: str, name: str, inputs: dict) -> dict:
        h = _short_hash(typ, name)
        region, account = self.region, ACCOUNT_ID
        physical = inputs.get("name") or name
        if typ == "eks:index:Cluster":
            cluster = inputs.get("name", name)
            issuer = f"oidc.eks.{region}.amazonaws.com/id/{h.upper()}"
            return {
                "kubeconfigJson": _kubeconfig(cluster, region),
                "kubeconfig": {},
                "oidcProviderArn": f"arn:aws:iam::{account}:oidc-provider/{issuer}",
                "oidcProviderUrl": f"https://{issuer}",
                "oidcIssuer": issuer,
                "clusterSecurityGroupId": f"sg-{h}",
                "nodeSecurityGroupId": "",
            }
        prefixes = {
            "aws:ec2/vpc:Vpc": "vpc",
            "aws:ec2/subnet:Subnet": "subnet",
            "aws:ec2/internetGateway:InternetGateway": "igw",
            "aws:ec2/natGateway:NatGateway": "nat",
            "aws:ec2/eip:Eip": "eipalloc",
            "aws:ec2/routeTable:RouteTable": "rtb",
            "aws:ec2/launchTemplate:LaunchTemplate": "lt",
        }
        if typ in prefixes:
            return {
                "__id": f"{prefixes[typ]}-{h}",
                "arn": f"arn:aws:ec2:{region}:{account}:{prefixes[typ]}/{h}",
                "latestVersion": 1,
            }
        if typ == "aws:iam/role:Role":
            return {"arn": f"arn:aws:iam::{account}:role/{physical}", "name": physical}
        if typ == "aws:kms/key:Key":
            key_id = f"{h[:8]}-{h[8:12]}-{h[12:16]}-0000-{h[:12]}"
            return {"arn": f"arn:aws:kms:{region}:{account}:key/{key_id}", "keyId": key_id}
        if typ == "aws:sqs/queue:Queue":
            return {
                "arn": f"arn:aws:sqs:{region}:{account}:{physical}",
                "url": f"https://sqs.{region}.amazonaws.com/{account}/{physical}",
                "name": physical,
            }
        if typ == "aws:s3/bucket:Bucket":
            bucket = inputs.get("bucket") or f"{inputs.get('bucketPrefix', name + '-')}{h[:12]}"
            return {"__id": bucket, "bucket": bucket, "arn": f"arn:aws:s3:::{bucket}"}
        if typ == "random:index/randomPassword:RandomPassword":
            # Deterministic stand-in; the program keeps it a secret Output, so plan files show [secret].
            return {"result": f"offline-{h}"}
        if typ.startswith("aws:"):
            service = typ.split(":")[1].split("/")[0]
            return {"arn": f"arn:aws:{service}:{region}:{account}:{physical}", "name": physical}
        return {}

    # --- invokes -----------------------------------------------------------
    def call(self, args: pulumi.runtime.MockCallArgs) -> dict:
        token = args.token
        if token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            letters = "abcdef"[: ZONE_COUNTS.get(self.region, 3)]
            geo, direction, number = self.region.split("-")
            # As AWS spells zone IDs: us-west-2 -> usw2, ap-northeast-1 -> apne1, eu-central-1 -> euc1.
            compass = "".join(w[0] for w in ("north", "south", "east", "west", "central") if w in direction)
            zone_id_prefix = f"{geo}{compass}{number}"
            return {
                "id": self.region,
                "names": [f"{self.region}{c}" for c in letters],
                "zoneIds": [f"{zone_id_prefix}-az{i + 1}" for i in range(len(letters))],
                "groupNames": [self.region] * len(letters),
            }
        if token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "accountId": ACCOUNT_ID,
                "arn": f"arn:aws:iam::{ACCOUNT_ID}:user/offline-plan",
                "userId": "AIDAOFFLINEPLAN",
                "id": ACCOUNT_ID,
            }
        if token == "aws:iam/getRoles:getRoles":
            # A fresh account: no role matches (the Spot service-linked role included).
            return {"arns": [], "names": [], "id": "roles"}
        if token == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws"}
        if token == "aws:index/getRegion:getRegion":
            return {"name": self.region, "region": self.region, "id": self.region}
        raise NotImplementedError(f"offline plan has no answer for invoke {token}; add one in tools/plan/mocks.py")


def _kubeconfig(cluster: str, region: str) -> str:
    import json

    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": cluster, "cluster": {"server": f"https://{cluster}.eks.{region}.example.invalid"}}],
            "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": cluster}}],
            "current-context": cluster,
            "users": [{"name": cluster, "user": {"token": "offline-plan"}}],
        }
    )


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """MockMonitor that also records each registration's parent and dependencies."""

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.recorded: list[Recorded] = []

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            inputs = rpc.deserialize_properties(request.object, keep_unknowns=True)
            self.recorded.append(
                Recorded(
                    urn=response.urn,
                    type=request.type,
                    name=request.name,
                    parent=request.parent,
                    custom=bool(request.custom),
                    provider=request.provider,
                    providers=dict(sorted(request.providers.items())),
                    dependencies=sorted(request.dependencies),
                    inputs=plain(inputs),
                    deleted_with=request.deletedWith,
                    replace_with=sorted(request.replace_with),
                    options=_options(request),
                )
            )
        return response


def _options(request: Any) -> dict[str, Any]:
    timeouts = request.customTimeouts
    options: dict[str, Any] = {
        "ignoreChanges": sorted(request.ignoreChanges),
        "retainOnDelete": request.retainOnDelete if request.HasField("retainOnDelete") else None,
        "protect": request.protect if request.HasField("protect") else None,
        "customTimeouts": {k: v for k in ("create", "update", "delete") if (v := getattr(timeouts, k))},
    }
    return {key: value for key, value in options.items() if value}
