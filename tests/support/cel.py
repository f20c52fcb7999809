"""Evaluate the CEL rules (`x-kubernetes-validations`) of a CRD schema against a custom resource.

A real API server rejects a custom resource when one of its CEL rules is false or fails to
evaluate; JSON-schema validation alone misses those (Karpenter keeps its label, requirement
and selector-term rules there). This module reproduces what the apiextensions server does on
create, closely enough for tests:

- the object is prepared as the server sees it: schema defaults applied, nulls of
  non-nullable fields dropped;
- the object is walked with its schema (`properties`, `items`, `additionalProperties`), and each
  rule runs with `self` bound to the value at its node, only where that value is present;
- values are typed from the schema: `format: duration|date|date-time|byte` strings become CEL
  durations, timestamps and bytes, `type: number` becomes double, int-or-string stays as given,
  object properties are visible under their CEL-escaped names (`a-b` is `a__dash__b`);
- transition rules (those reading `oldSelf`) only apply to updates and are skipped.

Rules are run by cel-python, with the Kubernetes CEL libraries it lacks added as functions
(`KUBERNETES_FUNCTIONS`: regex `find`/`findAll`, most of the cel-go strings extension and of the
Kubernetes list library) and with cel-go's equality (`1 == 1.0`, `self == null`, an int-or-string
compared with a string).
A rule this module cannot evaluate faithfully (syntax cel-python does not parse, a function
neither provides, such as the quantity, URL, IP or semver libraries, an identifier CEL would not
know) is reported by `unsupported_rules`, and makes `cel_violations` raise `UnsupportedRule`
rather than pass silently.

Known differences from the API server, none of which the vendored CRDs depend on: no static type
checking (a rule the server would refuse to compile may still run here), no cost limits,
`has(a.b.c)` is false rather than an error when `a.b` is missing, `<` between an int and a double
is an error, `messageExpression` and `reason` are ignored.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import celpy
import lark
import re2
from celpy import celtypes
from celpy.evaluation import CELEvalError, base_functions

Schema = dict[str, Any]
CELValue = Any  # a celpy.celtypes value, None for null, or a CELEvalError carried as a value


class UnsupportedRule(Exception):
    """A rule this module cannot evaluate the way the API server would."""


# Equality as cel-go has it


def _same(a: CELValue, b: CELValue) -> bool:
    """CEL heterogeneous equality: numbers compare by value across int, uint and double; values of
    different types are unequal. cel-python raises instead, which would turn `self == null` or an
    int-or-string compared with a string into evaluation errors."""
    if isinstance(a, celtypes.BoolType) or isinstance(b, celtypes.BoolType):  # Python's True == 1 is not CEL's
        return isinstance(a, celtypes.BoolType) and isinstance(b, celtypes.BoolType) and bool(a) == bool(b)
    if isinstance(a, _NUMBERS) and isinstance(b, _NUMBERS):
        return _number(a) == _number(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(value, b[key]) for key, value in a.items())
    try:
        return bool(a == b)
    except TypeError:  # cel-python's "no such overload" for two different types
        return False


_NUMBERS = (celtypes.IntType, celtypes.UintType, celtypes.DoubleType)


def _number(value: CELValue) -> int | float:
    # Python compares int with float exactly, as cel-go does.
    return float(value) if isinstance(value, celtypes.DoubleType) else int(value)


def _equal(a: CELValue, b: CELValue) -> CELValue:
    if isinstance(a, CELEvalError):
        return a
    if isinstance(b, CELEvalError):
        return b
    return celtypes.BoolType(_same(a, b))


def _not_equal(a: CELValue, b: CELValue) -> CELValue:
    result = _equal(a, b)
    return result if isinstance(result, CELEvalError) else celtypes.BoolType(not result)


# Kubernetes CEL libraries (https://kubernetes.io/docs/reference/using-api/cel/) that cel-python lacks.
# Failures are returned as CELEvalError values: cel-python propagates those like cel-go errors,
# and the rule is then reported as failing to evaluate, as the API server does.


def _error(message: str) -> CELEvalError:
    return CELEvalError(message)


@cache
def _regex(pattern: str) -> Any:
    # Kubernetes uses RE2 (as does cel-python's `matches`); Python's `re` differs on some syntax.
    return re2.compile(pattern)


def _find(text: celtypes.StringType, pattern: celtypes.StringType) -> CELValue:
    """`'abc 123'.find('[0-9]+')` is '123'; no match is ''."""
    try:
        match = _regex(str(pattern)).search(str(text))
    except re2.error as exc:
        return _error(f"invalid regex {str(pattern)!r}: {exc}")
    return celtypes.StringType(match.group(0) if match else "")


def _find_all(text: celtypes.StringType, pattern: celtypes.StringType, limit: int = -1) -> CELValue:
    """All matches, at most `limit` of them when `limit` is not negative."""
    try:
        matches = [m.group(0) for m in _regex(str(pattern)).finditer(str(text))]
    except re2.error as exc:
        return _error(f"invalid regex {str(pattern)!r}: {exc}")
    if limit >= 0:
        matches = matches[:limit]
    return celtypes.ListType(celtypes.StringType(m) for m in matches)


def _split(text: celtypes.StringType, separator: celtypes.StringType, limit: int = -1) -> CELValue:
    """cel-go strings extension: an empty separator splits into characters; `limit` caps the parts."""
    if limit == 0:
        return celtypes.ListType()
    parts = list(str(text)) if separator == "" else str(text).split(str(separator))
    if 0 < limit < len(parts):
        # The last part keeps the rest, separators included, as Go's strings.SplitN does.
        parts = [*parts[: limit - 1], str(separator).join(parts[limit - 1 :])]
    return celtypes.ListType(celtypes.StringType(p) for p in parts)


def _ascii_case(text: celtypes.StringType, upper: bool) -> celtypes.StringType:
    # Only ASCII letters change case in cel-go's lowerAscii/upperAscii; str.lower() would touch all of Unicode.
    shift = str.upper if upper else str.lower
    return celtypes.StringType("".join(shift(c) if c.isascii() else c for c in str(text)))


def _lower_ascii(text: celtypes.StringType) -> celtypes.StringType:
    return _ascii_case(text, upper=False)


def _upper_ascii(text: celtypes.StringType) -> celtypes.StringType:
    return _ascii_case(text, upper=True)


def _replace(
    text: celtypes.StringType, old: celtypes.StringType, new: celtypes.StringType, limit: int = -1
) -> CELValue:
    return celtypes.StringType(str(text).replace(str(old), str(new), limit))


def _trim(text: celtypes.StringType) -> celtypes.StringType:
    return celtypes.StringType(str(text).strip())


def _index_of(target: CELValue, item: CELValue, offset: int = 0) -> CELValue:
    """String search (cel-go strings extension) or list search (Kubernetes list library)."""
    if isinstance(target, celtypes.ListType):
        return celtypes.IntType(next((i for i, v in enumerate(target) if _same(v, item)), -1))
    text = str(target)
    if not 0 <= offset <= len(text):
        return _error(f"index out of range: {offset}")
    return celtypes.IntType(text.find(str(item), offset))


def _last_index_of(target: CELValue, item: CELValue, offset: int | None = None) -> CELValue:
    if isinstance(target, celtypes.ListType):
        return celtypes.IntType(next((i for i in reversed(range(len(target))) if _same(target[i], item)), -1))
    text = str(target)
    end = len(text) if offset is None else offset
    if not 0 <= end <= len(text):
        return _error(f"index out of range: {end}")
    # cel-go's offset is where the match may start at the latest.
    return celtypes.IntType(text.rfind(str(item), 0, end + len(str(item))))


def _substring(text: celtypes.StringType, start: int, end: int | None = None) -> CELValue:
    end = len(text) if end is None else end
    if not 0 <= start <= end <= len(text):
        return _error(f"substring out of range: [{start}:{end}] of a string of length {len(text)}")
    return celtypes.StringType(str(text)[start:end])


def _char_at(text: celtypes.StringType, index: int) -> CELValue:
    if not 0 <= index <= len(text):
        return _error(f"index out of range: {index}")
    return celtypes.StringType(str(text)[index : index + 1])


def _join(items: celtypes.ListType, separator: str = "") -> CELValue:
    if not all(isinstance(i, celtypes.StringType) for i in items):
        return _error("join applies to a list of strings")
    return celtypes.StringType(str(separator).join(str(i) for i in items))


def _is_sorted(items: celtypes.ListType) -> celtypes.BoolType:
    return celtypes.BoolType(all(a <= b for a, b in itertools.pairwise(items)))


def _sum(items: celtypes.ListType) -> CELValue:
    return sum(items[1:], items[0]) if items else celtypes.IntType(0)


def _max(items: celtypes.ListType) -> CELValue:
    return max(items) if items else _error("max of an empty list")


def _int(value: CELValue) -> CELValue:
    # cel-go parses strings with strconv.ParseInt: Python's int() would also take ' 1', '1_000' or non-ASCII digits.
    if isinstance(value, celtypes.StringType) and not re2.fullmatch(r"[+-]?[0-9]+", str(value)):
        return _error(f"cannot convert {str(value)!r} to int")
    return celtypes.IntType(value)


KUBERNETES_FUNCTIONS: dict[str, Callable[..., Any]] = {
    # regex library
    "find": _find,
    "findAll": _find_all,
    # cel-go strings extension
    "split": _split,
    "lowerAscii": _lower_ascii,
    "upperAscii": _upper_ascii,
    "replace": _replace,
    "trim": _trim,
    "indexOf": _index_of,
    "lastIndexOf": _last_index_of,
    "substring": _substring,
    "charAt": _char_at,
    "join": _join,
    # list library (`min()` is built into cel-python)
    "isSorted": _is_sorted,
    "sum": _sum,
    "max": _max,
    # standard functions and operators, made to behave as in cel-go
    "int": _int,
    "_==_": _equal,
    "_!=_": _not_equal,
}

# Macros take a variable and an expression (has() takes one field selection). cel-python has
# no three-argument map() nor two-variable comprehensions, so other arities are unsupported.
_MACRO_ARITY = {"all": 2, "exists": 2, "exists_one": 2, "map": 2, "filter": 2, "has": 1, "dyn": 1}
_FUNCTIONS = set(base_functions) | set(KUBERNETES_FUNCTIONS) | {"min"}
# Type names CEL knows as identifiers, e.g. `type(self) == string`.
_TYPE_IDENTIFIERS = {"bool", "bytes", "double", "duration", "int", "list", "map", "null_type", "string", "timestamp",
                     "type", "uint"}  # fmt: skip


# Compiling rules


@dataclass(frozen=True)
class _Compiled:
    program: Any  # a celpy Runner
    transition: bool  # reads oldSelf: applies to updates only


_ENVIRONMENT = celpy.Environment()


@cache
def _compile(rule: str) -> _Compiled:
    """The rule ready to run; raises UnsupportedRule when it cannot run as on the API server."""
    try:
        ast = _ENVIRONMENT.compile(rule)
    except Exception as exc:  # cel-python's parse errors carry no common base class
        raise UnsupportedRule(f"{rule!r}: cel-python cannot parse it: {exc}") from exc
    transition = "oldSelf" in set(_identifiers(ast))
    if not transition:
        problems = _problems(ast)
        if problems:
            raise UnsupportedRule(f"{rule!r}: {'; '.join(problems)}")
    return _Compiled(_ENVIRONMENT.program(ast, functions=KUBERNETES_FUNCTIONS), transition)


def _identifiers(ast: lark.Tree) -> Iterator[str]:
    for node in ast.find_data("ident"):
        yield str(node.children[0])


def _calls(ast: lark.Tree) -> Iterator[tuple[str, int]]:
    """(name, number of arguments) of every function, method and macro call, the receiver not counted."""
    for node in ast.iter_subtrees():
        if node.data == "ident_arg":  # name(args)
            name, args = node.children[0], node.children[1:]
        elif node.data == "member_dot_arg":  # target.name(args)
            name, args = node.children[1], node.children[2:]
        else:
            continue
        count = len(args[0].children) if args and isinstance(args[0], lark.Tree) else 0
        yield str(name), count


def _macro_variables(ast: lark.Tree) -> set[str]:
    variables = set()
    for node in ast.find_data("member_dot_arg"):
        if str(node.children[1]) in _MACRO_ARITY and len(node.children) > 2:
            variables.update(_identifiers(node.children[2].children[0]))
    return variables


def _problems(ast: lark.Tree) -> list[str]:
    problems = []
    for name, count in _calls(ast):
        if name in _MACRO_ARITY and count != _MACRO_ARITY[name]:
            problems.append(f"macro {name}() with {count} arguments is not supported")
        elif name not in _MACRO_ARITY and name not in _FUNCTIONS:
            problems.append(f"function {name}() is not provided")
    known = {"self"} | _macro_variables(ast) | _TYPE_IDENTIFIERS
    problems += [f"unknown identifier {name!r}" for name in sorted(set(_identifiers(ast)) - known)]
    return problems


def _evaluable(rule: Schema) -> _Compiled | None:
    """The compiled rule, or None for a transition rule (never run on create)."""
    compiled = _compile(rule["rule"])
    if not compiled.transition:
        return compiled
    if rule.get("optionalOldSelf"):
        # Such rules also run on create, with oldSelf an empty optional: cel-python has no optionals.
        raise UnsupportedRule(f"{rule['rule']!r}: optionalOldSelf rules need CEL optionals")
    return None


# Preparing the object as the API server holds it when it validates


def _prepared(value: Any, schema: Schema | None) -> Any:
    """A copy with schema defaults applied and nulls of non-nullable fields dropped, as the server does."""
    if schema is None:
        return copy.deepcopy(value)
    if isinstance(value, dict):
        out = {}
        for key, child in value.items():
            child_schema = _child_schema(schema, key)
            if child is None and not (child_schema or {}).get("nullable"):
                continue
            out[key] = _prepared(child, child_schema)
        for key, prop in (schema.get("properties") or {}).items():
            if key not in out and "default" in prop:
                out[key] = _prepared(prop["default"], prop)
        return out
    if isinstance(value, list):
        items = schema.get("items")
        return [_prepared(item, items if isinstance(items, dict) else None) for item in value]
    return value


def _child_schema(schema: Schema, key: str) -> Schema | None:
    properties = schema.get("properties") or {}
    if key in properties:
        return properties[key]
    extra = schema.get("additionalProperties")
    return extra if isinstance(extra, dict) else None


# Typing values as the API server's CEL sees them

# At the root and in embedded resources CEL sees apiVersion, kind and only these metadata fields.
_TYPE_AND_OBJECT_META: dict[str, Schema] = {
    "apiVersion": {"type": "string"},
    "kind": {"type": "string"},
    "metadata": {"type": "object", "properties": {"name": {"type": "string"}, "generateName": {"type": "string"}}},
}
_CEL_RESERVED = {"true", "false", "null", "in", "as", "break", "const", "continue", "else", "for", "function", "if",
                 "import", "let", "loop", "package", "namespace", "return", "var", "void", "while"}  # fmt: skip
_ESCAPABLE = r"[a-zA-Z_.\-/][a-zA-Z0-9_.\-/]*"


def _escape(name: str) -> str | None:
    """The CEL field name of an object property, None when CEL cannot reach it."""
    if name in _CEL_RESERVED:
        return f"__{name}__"
    if not re2.fullmatch(_ESCAPABLE, name):
        return None
    for old, new in (("__", "__underscores__"), (".", "__dot__"), ("-", "__dash__"), ("/", "__slash__")):
        name = name.replace(old, new)
    return name


def _to_cel(value: Any, schema: Schema, embedded: bool = False) -> CELValue:
    if value is None:
        return None
    if schema.get("x-kubernetes-int-or-string"):
        return celpy.json_to_cel(value)
    kind = schema.get("type")
    if kind == "object" and isinstance(value, dict):
        return _object_to_cel(value, schema, embedded or bool(schema.get("x-kubernetes-embedded-resource")))
    if kind == "array" and isinstance(value, list) and isinstance(schema.get("items"), dict):
        return celtypes.ListType(_to_cel(item, schema["items"]) for item in value)
    if kind == "string" and isinstance(value, str):
        return _string_to_cel(value, schema.get("format"))
    if kind == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        return celtypes.DoubleType(value)
    # Integers, booleans, untyped values, and values of the wrong type (JSON-schema validation reports those).
    return celpy.json_to_cel(value)


def _object_to_cel(value: dict[str, Any], schema: Schema, embedded: bool) -> CELValue:
    properties = schema.get("properties")
    if embedded:
        properties = {**(properties or {}), **_TYPE_AND_OBJECT_META}
    if properties is not None:
        # An object with properties: only declared fields are visible, under their escaped names.
        fields = {}
        for key, child in value.items():
            name = _escape(key)
            if key in properties and name is not None:
                fields[celtypes.StringType(name)] = _to_cel(child, properties[key])
        return celtypes.MapType(fields)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        # A map: keys as they are.
        return celtypes.MapType({celtypes.StringType(k): _to_cel(v, extra) for k, v in value.items()})
    return celpy.json_to_cel(value)


def _string_to_cel(text: str, fmt: str | None) -> CELValue:
    try:
        if fmt == "duration":
            return celtypes.DurationType(text)
        if fmt == "date-time":
            return celtypes.TimestampType(text)
        if fmt == "date":
            day = datetime.date.fromisoformat(text)
            return celtypes.TimestampType(datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC))
        if fmt == "byte":
            return celtypes.BytesType(base64.b64decode(text, validate=True))
    except (ValueError, TypeError, binascii.Error) as exc:
        # The server's value is an error too: rules that read it fail to evaluate.
        return _error(f"invalid {fmt} formatted string {text!r}: {exc}")
    return celtypes.StringType(text)


# Walking the object with its schema


def _nodes(schema: Schema, value: Any, path: str) -> Iterator[tuple[Schema, Any, str]]:
    """(schema, value, path) of every value present in the object that the schema describes."""
    if value is None:  # absent, or a null the server does not validate
        return
    yield schema, value, path
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for key, child in value.items():
            if key in properties:
                yield from _nodes(properties[key], child, f"{path}.{key}" if path else key)
            elif isinstance(schema.get("additionalProperties"), dict):
                yield from _nodes(schema["additionalProperties"], child, f"{path}[{key}]")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield from _nodes(schema["items"], item, f"{path}[{index}]")


def _rules(schema: Schema) -> list[Schema]:
    return list(schema.get("x-kubernetes-validations") or [])


def _failure(rule: Schema, compiled: _Compiled, value: CELValue) -> str | None:
    """Why the API server would reject `value` by this rule, or None when it passes."""
    reason = (rule.get("message") or rule["rule"]).strip()
    try:
        result = compiled.program.evaluate({"self": value})
    except Exception as exc:  # CELEvalError, or a Python error cel-python let through
        detail = exc.args[0] if isinstance(exc, CELEvalError) and exc.args else f"{type(exc).__name__}: {exc}"
        return f"{reason} (rule: {rule['rule']}; evaluation error: {detail})"
    if not isinstance(result, celtypes.BoolType):
        return f"{reason} (rule: {rule['rule']}; evaluation error: result {result!r} is not a bool)"
    return None if result else f"{reason} (rule: {rule['rule']})"


def _rule_path(path: str, rule: Schema) -> str:
    # fieldPath points below the rule's node, e.g. '.spec.replicas'.
    path += rule.get("fieldPath", "")
    return path.lstrip(".") or "<root>"


def _runnable(node: Schema, path: str) -> list[tuple[Schema, _Compiled]]:
    """The rules of `node` to run on create, compiled."""
    runnable = []
    for rule in _rules(node):
        try:
            compiled = _evaluable(rule)
        except UnsupportedRule as exc:
            raise UnsupportedRule(f"{_rule_path(path, {})}: {exc}") from exc
        if compiled is not None:
            runnable.append((rule, compiled))
    return runnable


def cel_violations(schema: Schema, obj: dict[str, Any]) -> list[str]:
    """Evaluate every x-kubernetes-validations rule in `schema` (an openAPIV3Schema) against `obj`
    (the whole custom resource). One '<path>: <message or rule> (rule: <rule>)' per failed rule,
    in walk order; empty when all pass. Raises UnsupportedRule for a rule it cannot evaluate."""
    found = []
    for node, value, path in _nodes(schema, _prepared(obj, schema), ""):
        runnable = _runnable(node, path)
        if not runnable:
            continue
        cel_value = _to_cel(value, node, embedded=not path)  # the root is a resource: apiVersion, kind, metadata
        for rule, compiled in runnable:
            failure = _failure(rule, compiled, cel_value)
            if failure is not None:
                found.append(f"{_rule_path(path, rule)}: {failure}")
    return found


# Finding rules that cannot be evaluated


def _schema_nodes(schema: Schema, path: str) -> Iterator[tuple[Schema, str]]:
    """Every schema node that cel_violations can reach, with a path where [*] is any item or key."""
    yield schema, path
    for key, child in (schema.get("properties") or {}).items():
        yield from _schema_nodes(child, f"{path}.{key}" if path else key)
    for keyword in ("items", "additionalProperties"):
        if isinstance(schema.get(keyword), dict):
            yield from _schema_nodes(schema[keyword], f"{path}[*]")


def _rule_holders(schema: Schema, pointer: str) -> Iterator[tuple[int, str]]:
    """(id, JSON pointer) of every subschema that has rules, including under allOf/anyOf/oneOf/not."""
    if schema.get("x-kubernetes-validations"):
        yield id(schema), pointer or "/"
    subschemas = [(f"properties/{_pointer_token(k)}", v) for k, v in (schema.get("properties") or {}).items()]
    subschemas += [(k, schema[k]) for k in ("items", "additionalProperties", "not") if isinstance(schema.get(k), dict)]
    subschemas += [(f"{k}/{i}", v) for k in ("allOf", "anyOf", "oneOf") for i, v in enumerate(schema.get(k) or [])]
    for token, subschema in subschemas:
        yield from _rule_holders(subschema, f"{pointer}/{token}")


def _pointer_token(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def unsupported_rules(schema: Schema) -> list[str]:
    """Rules of `schema` that cel_violations cannot evaluate, one line each; empty when all can."""
    found = []
    reachable = set()
    for node, path in _schema_nodes(schema, ""):
        reachable.add(id(node))
        for rule in _rules(node):
            try:
                _evaluable(rule)
            except UnsupportedRule as exc:
                found.append(f"{path or '<root>'}: {exc}")
    # e.g. rules under allOf/anyOf, which the walk (like the API server) never runs.
    found += [f"#{pointer}: rules outside properties/items/additionalProperties are not evaluated"
              for holder, pointer in _rule_holders(schema, "") if holder not in reachable]  # fmt: skip
    return found
