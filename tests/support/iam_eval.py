"""A small IAM evaluator for identity policies: enough to ask "is this request allowed?" of a
document we render (moto enforces Action and Resource, but ignores StringLike conditions).

Semantics (IAM policy evaluation logic, AWS IAM User Guide): an explicit Deny wins; otherwise
some Allow statement must match the action, the resource and every condition; else denied.
`Action`/`Resource` and StringLike values are globs where `*` matches any run of characters
(none included) and `?` one character; StringEquals compares exactly; several values of one
condition key are ORed, several keys and operators ANDed. A condition key absent from the
request context fails its condition (no ...IfExists operators here).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any


def _glob(pattern: str, value: str, *, case: bool = True) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, 0 if case else re.IGNORECASE) is not None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _conditions_hold(conditions: Mapping[str, Mapping[str, Any]], context: Mapping[str, str]) -> bool:
    for operator, keys in conditions.items():
        for key, expected in keys.items():
            if key not in context:
                return False
            actual = context[key]
            if operator == "StringLike":
                ok = any(_glob(e, actual) for e in _list(expected))
            elif operator == "StringEquals":
                ok = actual in _list(expected)
            else:
                raise NotImplementedError(f"condition operator {operator}")
            if not ok:
                return False
    return True


def _matches(statement: Mapping[str, Any], action: str, resource: str, context: Mapping[str, str]) -> bool:
    if {"NotAction", "NotResource"} & set(statement):
        raise NotImplementedError("NotAction / NotResource")
    return (
        any(_glob(a, action, case=False) for a in _list(statement["Action"]))
        and any(_glob(r, resource) for r in _list(statement["Resource"]))
        and _conditions_hold(statement.get("Condition", {}), context)
    )


def allowed(policy: Mapping[str, Any], action: str, resource: str, context: Mapping[str, str] | None = None) -> bool:
    statements = _list(policy["Statement"])
    ctx = context or {}
    if any(s["Effect"] == "Deny" and _matches(s, action, resource, ctx) for s in statements):
        return False
    return any(s["Effect"] == "Allow" and _matches(s, action, resource, ctx) for s in statements)
