"""The pack as a whole: names, metadata, and the per-environment config files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from policies.rules import all_policies

CONFIG_DIR = Path(__file__).resolve().parents[2] / "policies" / "config"


def test_names_are_unique_kebab_case_with_description_and_remediation() -> None:
    policies = all_policies()
    names = [p.name for p in policies]
    assert len(names) == len(set(names))
    for p in policies:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", p.name), p.name
        assert p.description and p.remediation_steps, p.name


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.json")), ids=lambda p: p.name)
def test_config_files_name_real_policies_and_declared_properties(path: Path) -> None:
    policies = {p.name: p for p in all_policies()}
    for name, entry in json.loads(path.read_text()).items():
        assert name in policies, f"{path.name} configures unknown policy {name}"
        if isinstance(entry, str):
            assert entry in ("advisory", "mandatory", "disabled"), entry
            continue
        declared = set(policies[name].config_schema.properties) if policies[name].config_schema else set()
        assert set(entry) - {"enforcementLevel"} <= declared, (
            f"{path.name}: {name} sets undeclared {set(entry) - declared}"
        )


def test_config_defaults_match_their_declared_types() -> None:
    kinds = {"array": list, "integer": int, "boolean": bool, "string": str, "number": (int, float)}
    # Keys without a default switch a check off until an environment sets them.
    optional = {("max-hourly-spend", "maxHourlySpend")}
    for p in all_policies():
        for key, spec in (p.config_schema.properties if p.config_schema else {}).items():
            if (p.name, key) in optional:
                assert "default" not in spec, f"{p.name}.{key}"
            else:
                assert isinstance(spec["default"], kinds[spec["type"]]), f"{p.name}.{key}"
            assert spec.get("description"), f"{p.name}.{key} has no description"


def test_the_pack_entry_point_only_assembles() -> None:
    text = (CONFIG_DIR.parent / "__main__.py").read_text()
    assert "PolicyPack(" in text and "all_policies()" in text
    assert "def " not in text, "rules belong in policies/rules/, not in the pack's entry point"
