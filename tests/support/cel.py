"""Evaluate the CEL rules (`x-kubernetes-validations`) of a CRD schema against an object.

A real API server rejects a custom resource whose CEL rule is false; JSON
schema validation alone misses those (Karpenter puts its label, taint and
requirement rules there). Rules are evaluated with cel-python, plus the two
Kubernetes string-library functions the vendored CRDs use (`find`, `split`).
Transition rules (those that read `oldSelf`) only apply to updates and are skipped.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import celpy
from celpy import celtypes


def _find(value: celtypes.StringType, pattern: celtypes.StringType) -> celtypes.StringType:
    match = re.search(str(pattern), str(value))
    return celtypes.StringType(match.group(0) if match else "")


def _split(value: celtypes.StringType, separator: celtypes.StringType) -> celtypes.ListType:
    return celtypes.ListType([celtypes.StringType(part) for part in str(value).split(str(separator))])


KUBERNETES_FUNCTIONS = {"find": _find, "split": _split}


class UnsupportedRule(Exception):
    pass


@cache
def _program(rule: str) -> Any:
    env = celpy.Environment()
    try:
        return env.program(env.compile(rule), functions=KUBERNETES_FUNCTIONS)
    except Exception as exc:  # cel-python raises its own parse errors
        raise UnsupportedRule(f"cannot compile {rule!r}: {exc}") from exc


def _holds(rule: str, value: Any) -> bool | str:
    """True or False, or an error text when evaluation fails (the API server rejects those too)."""
    try:
        result = _program(rule).evaluate({"self": celpy.json_to_cel(value)})
    except Exception as exc:
        return f"evaluation error: {exc}"
    if isinstance(result, Exception):
        return f"evaluation error: {result}"
    return bool(result)


def _rules(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in schema.get("x-kubernetes-validations") or [] if "oldSelf" not in r["rule"]]


def cel_violations(schema: dict[str, Any], obj: Any, path: str = "") -> list[str]:
    """One message per failed rule, for every schema node present in `obj`."""
    found = []
    for rule in _rules(schema):
        outcome = _holds(rule["rule"], obj)
        if outcome is not True:
            reason = rule.get("message") or rule["rule"] if outcome is False else outcome
            found.append(f"{path or '<root>'}: {reason} (rule: {rule['rule']})")
    if isinstance(obj, dict):
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, value in obj.items():
            child = properties.get(key) or (extra if isinstance(extra, dict) else None)
            if child is not None:
                found += cel_violations(child, value, f"{path}.{key}" if path else key)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            found += cel_violations(schema["items"], item, f"{path}[{i}]")
    return found


def unsupported_rules(schema: Any) -> list[str]:
    """Rules of `schema` (anywhere inside) that cel-python cannot compile."""
    bad: list[str] = []
    if isinstance(schema, dict):
        for rule in _rules(schema):
            try:
                _program(rule["rule"])
            except UnsupportedRule as exc:
                bad.append(str(exc))
        for value in schema.values():
            bad += unsupported_rules(value)
    elif isinstance(schema, list):
        for value in schema:
            bad += unsupported_rules(value)
    return bad
