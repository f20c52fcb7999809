"""Validate rendered Kubernetes objects against real upstream schemas.

Custom resources: the vendored CRDs under `schemas/` (structural schema with
unknown fields as errors, as a real API server prunes or rejects them, plus
the CRDs' CEL rules). Core objects: kubernetes-validate's strict schemas for
the cluster's Kubernetes version.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

SCHEMA_ROOT = Path(__file__).resolve().parents[2] / "schemas"


@cache
def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> openAPIV3Schema, for every vendored CRD version."""
    found: dict[tuple[str, str], dict] = {}
    # iam/ holds CloudFormation (its `!Sub` tags are not plain YAML), never CRDs.
    for path in sorted(p for p in SCHEMA_ROOT.rglob("*.yaml") if p.parent.name != "iam"):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = doc["spec"]["group"], doc["spec"]["names"]["kind"]
            for version in doc["spec"]["versions"]:
                found[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return found


def strict(schema: Any) -> Any:
    """Copy of a structural schema where unknown fields are errors and
    int-or-string is spelled out for jsonschema."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if out.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def _crd_validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator:
    schema = strict(copy.deepcopy(crd_schemas()[(api_version, kind)]))
    return jsonschema.Draft202012Validator(schema)


def _path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<root>"


def validate(obj: dict[str, Any], kubernetes_version: str) -> list[str]:
    """Every schema error of `obj`, as readable lines; empty when valid."""
    key = (obj.get("apiVersion", ""), obj.get("kind", ""))
    if key in crd_schemas():
        errors = [f"{_path(e)}: {e.message}" for e in sorted(_crd_validator(*key).iter_errors(obj), key=str)]
        errors += _metadata_errors(obj, kubernetes_version)
        errors += _cel_errors(key, obj)
        return errors
    try:
        kubernetes_validate.validate(obj, kubernetes_version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        # It copies the jsonschema error's fields onto itself.
        return [f"{_path(exc)}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [f"no upstream schema for {key}: {exc.message}"]
    return []


def _metadata_errors(obj: dict[str, Any], kubernetes_version: str) -> list[str]:
    """CRD schemas leave metadata open; the API server still enforces ObjectMeta."""
    probe = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj.get("metadata", {})}
    try:
        kubernetes_validate.validate(probe, kubernetes_version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{_path(exc)}: {exc.message}"]
    return []


def _cel_errors(key: tuple[str, str], obj: dict[str, Any]) -> list[str]:
    from tests.support.cel import cel_violations

    return cel_violations(crd_schemas()[key], obj)
