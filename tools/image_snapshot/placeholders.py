"""`{{name}}` placeholders: values a plan refers to before a running build knows them.

An earlier step's output (an instance ID, the data volume's ID) or a secret the
executor fetches only when it sends the command that needs it (`ecr-password:<region>`,
so that a dry run never holds a registry password).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

PLACEHOLDER = re.compile(r"\{\{([a-z0-9_.:-]+)\}\}")
ECR_SECRET = "ecr-password:"


def ref(name: str) -> str:
    """Placeholder for a value known only while running (an ID an earlier step returns)."""
    return "{{" + name + "}}"


def resolve(value: Any, lookup: Callable[[str], str]) -> Any:
    """`value` with every `{{name}}` replaced by `lookup(name)`."""
    if isinstance(value, str):
        return PLACEHOLDER.sub(lambda m: lookup(m[1]), value)
    if isinstance(value, list):
        return [resolve(v, lookup) for v in value]
    if isinstance(value, dict):
        return {k: resolve(v, lookup) for k, v in value.items()}
    return value
