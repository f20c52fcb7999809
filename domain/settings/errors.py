"""Config errors: how a rule reports problems, and how pydantic's errors become readable lines.

A rule returns every problem it finds (`field_error` / `value_error`, one each)
and hands them to `raise_all`, so one run names them all. The lines `describe_all`
renders each read `gpu-inference:<full.key.path> <message> (got <value>)`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pulumi.errors import RunError
from pydantic import BaseModel, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from domain.settings.patterns import PROJECT


class ConfigError(RunError, ValueError):
    """Invalid stack config; `lines` holds one readable message per problem.

    A `pulumi.RunError`: under `pulumi up` / `preview` the CLI prints the message
    and exits, with no Python traceback in the way of the key paths.
    """

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        super().__init__("invalid stack config:\n  " + "\n  ".join(lines))


def field_error(key: str, message: str, value: Any) -> PydanticCustomError:
    """A problem with `key` inside the model being validated (cross-field rules).

    `key` is the path below that model (`maxGpus`, `inference.llm.pool`); `{got}`
    in `message` becomes the JSON form of `value`.
    """
    return PydanticCustomError("field", message, {"field": key, "got": json.dumps(value)})


def value_error(kind: str, message: str, value: Any) -> PydanticCustomError:
    """A problem with the field being validated; `{got}` becomes the JSON form of `value`."""
    return PydanticCustomError(kind, message, {"got": json.dumps(value)})


def raise_all(problems: Sequence[PydanticCustomError]) -> None:
    """Raise every problem at once (a validator may raise only one exception).

    pydantic unpacks a `ValidationError` raised inside a validator into its line
    errors and prefixes each with the validator's location, so every problem
    keeps its own key path.
    """
    if problems:
        details: list[InitErrorDetails] = [{"type": p, "input": None} for p in problems]
        raise ValidationError.from_exception_data("settings", details)


# --- rendering pydantic errors ------------------------------------------------

# Fields whose config key is not `gpu-inference:<alias>`.
_KEY_OF_FIELD = {"region": "aws:region"}

_BOUNDS = {
    "greater_than_equal": (">=", "ge"),
    "greater_than": (">", "gt"),
    "less_than_equal": ("<=", "le"),
    "less_than": ("<", "lt"),
}


def describe_all(errors: Sequence[Mapping[str, Any]], root: type[BaseModel]) -> list[str]:
    """One line per problem, unknown keys first (a misspelt key explains the
    problems that follow from it); `root` is the model of the whole config.

    A list whose item failed also reports its length (pydantic drops the bad
    item): only the item's message is kept.
    """
    item_paths = {tuple(e["loc"][:-1]) for e in errors if e["loc"] and isinstance(e["loc"][-1], int)}
    kept = [e for e in errors if not (e["type"] == "too_short" and tuple(e["loc"]) in item_paths)]
    kept.sort(key=lambda e: e["type"] != "extra_forbidden")  # stable: otherwise pydantic's order
    return [_describe(e, root) for e in kept]


def _path(loc: tuple[Any, ...]) -> str:
    """The key as a user finds it in `Pulumi.<stack>.yaml`: `gpu-inference:nodePools.gpu.maxGpus`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return _KEY_OF_FIELD.get(out, f"{PROJECT}:{out}")


def inner_model(annotation: Any) -> type[BaseModel] | None:
    """The model class inside Optional / tuple / Mapping / Annotated annotations."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = inner_model(arg)
        if found is not None:
            return found
    return None


def _allowed_keys(loc: tuple[Any, ...], root: type[BaseModel]) -> list[str]:
    """Keys the model at `loc` accepts (for unknown-key messages)."""
    model: Any = root
    skip_map_key = False
    for part in loc:
        if isinstance(part, int):
            continue
        if skip_map_key:  # a pool name in nodePools: the model stays the value model
            skip_map_key = False
            continue
        field = next(f for n, f in model.model_fields.items() if (f.alias or n) == part)
        skip_map_key = _is_mapping(field.annotation)
        model = inner_model(field.annotation)
    return [f.alias or n for n, f in model.model_fields.items()]


def _is_mapping(annotation: Any) -> bool:
    origin = getattr(annotation, "__origin__", None)
    return origin in (Mapping, dict) or any(_is_mapping(a) for a in getattr(annotation, "__args__", ()) or ())


def _describe(err: Mapping[str, Any], root: type[BaseModel]) -> str:
    loc = tuple(err["loc"])
    kind = err["type"]
    ctx = err.get("ctx") or {}
    got = json.dumps(err.get("input"), default=str)
    if kind == "field":
        return f"{_path((*loc, ctx['field']))} {err['msg']}"
    key = _path(loc)
    if "got" in ctx:  # our own `value_error`: its message already says what is allowed and what was found
        return f"{key} {err['msg']}"
    if kind == "extra_forbidden":
        return f"{key} is not a known key (allowed: {', '.join(_allowed_keys(loc[:-1], root))})"
    if kind == "missing":
        return f"{key} is required"
    if kind in _BOUNDS:
        op, name = _BOUNDS[kind]
        return f"{key} must be {op} {ctx[name]} (got {got})"
    if kind == "literal_error":
        return f"{key} must be one of {ctx['expected']} (got {got})"
    if kind == "string_pattern_mismatch":
        return f"{key} must match {ctx['pattern']} (got {got})"
    if kind == "too_short" and ctx.get("min_length") == 1:
        return f"{key} must not be empty (got {got})"
    if kind in ("too_short", "too_long"):
        what, limit = ("at least", ctx.get("min_length")) if kind == "too_short" else ("at most", ctx.get("max_length"))
        unit = "characters" if isinstance(err.get("input"), str) else "items"
        return f"{key} must have {what} {limit} {unit} (got {got})"
    if kind.endswith("_type"):
        return f"{key} must be of type {kind.removesuffix('_type').replace('_', ' ')} (got {got})"
    message = f"{err['msg'][:1].lower()}{err['msg'][1:]}"
    return f"{key} {message} (got {got})"
