"""Pulumi.yaml is a valid project file for the real Pulumi CLI and declares every key."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

from domain.settings import CONFIG_KEYS

ROOT = Path(__file__).resolve().parents[1]
PROJECT_SCHEMA = ROOT / "schemas" / "pulumi" / "project.json"


def project() -> dict:
    return yaml.safe_load((ROOT / "Pulumi.yaml").read_text())


def test_project_file_validates_against_the_upstream_schema() -> None:
    schema = json.loads(PROJECT_SCHEMA.read_text())
    errors = sorted(str(e.message) for e in jsonschema.Draft202012Validator(schema).iter_errors(project()))
    assert errors == []


def test_the_upstream_schema_rejects_an_object_type() -> None:
    """Why structured keys are not typed in `config:` (the CLI would refuse the project)."""
    schema = json.loads(PROJECT_SCHEMA.read_text())
    broken = {**project(), "config": {"gpu-inference:nodePools": {"type": "object", "description": "x"}}}
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(broken))


def test_every_key_the_program_reads_is_declared_with_a_description() -> None:
    doc = project()
    declared = {**doc["template"]["config"], **doc.get("config", {})}
    missing = [key for key in CONFIG_KEYS if not (declared.get(key) or {}).get("description")]
    assert missing == []
    assert set(declared) == set(CONFIG_KEYS)


def test_typed_keys_match_settings() -> None:
    assert project()["config"]["gpu-inference:environment"]["type"] == "string"


def test_project_name_and_runtime() -> None:
    doc = project()
    assert doc["name"] == "gpu-inference"
    assert doc["runtime"]["name"] == "python" and doc["runtime"]["options"]["virtualenv"] == ".venv"
