"""Server settings are validated before anything runs: each bad value names its full key, and the
offline plan exits 2 writing nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from domain.settings import ConfigError, raw_from_stack_config
from tests.conftest import run_plan, settings_of, stack_config

INF = "gpu-inference:inference"
KEY = "gpu-inference:inference.x"
S3 = {"uri": "s3://acme-models/models/qwen/"}


def problems(**svc) -> list[str]:
    config = stack_config("dev")
    config[INF]["x"] = {"pool": "gpu", **svc}
    with pytest.raises(ConfigError) as err:
        settings_of(config)
    return err.value.lines


@pytest.mark.parametrize(
    ("svc", "expected"),
    [
        ({"server": "tgi", "image": "a/b:1"}, [f"{KEY}.server must be one of 'reference', 'vllm', 'triton' or 'custom' (got \"tgi\")"]),
        ({"server": "vllm"}, [f"{KEY}.model.uri is required for server vllm"]),
        ({"server": "triton"}, [f"{KEY}.model.uri is required for server triton"]),
        ({"server": "vllm", "model": {"uri": "gs://acme/models/qwen/"}},
         [f'{KEY}.model.uri must be s3://<bucket>/<prefix>/ or hf://<org>/<name>[@<revision>] (got "gs://acme/models/qwen/")']),
        ({"server": "vllm", "model": {"uri": "s3://acme-models/"}},
         [f'{KEY}.model.uri must be s3://<bucket>/<prefix>/ or hf://<org>/<name>[@<revision>] (got "s3://acme-models/")']),
        ({"server": "triton", "model": {"uri": "hf://Qwen/Qwen2.5-0.5B"}},
         [f'{KEY}.model.uri must be s3:// for server triton (got "hf://Qwen/Qwen2.5-0.5B")']),
        ({"server": "custom", "image": "a/b:1"}, [
            f"{KEY}.port is required for server custom",
            f"{KEY}.healthPath is required for server custom",
            f"{KEY}.scaling.query is required for server custom",
            f"{KEY}.scaling.target is required for server custom",
        ]),
        ({"server": "vllm", "model": S3, "scaling": {"query": "sum(vllm:num_requests_waiting)"}},
         [f'{KEY}.scaling.query must contain the placeholder {{service}} (got "sum(vllm:num_requests_waiting)")']),
        # A key that does not belong before what is wrong with the rest.
        ({"server": "vllm", "model": S3, "healthPath": "/h", "envSecrets": {"HF_TOKEN": "hf token"}}, [
            f'{KEY}.healthPath is only for server custom (got "/h" with server vllm)',
            f"{KEY}.envSecrets.HF_TOKEN must name a Pulumi config key (letters, digits, '-', '_') (got \"hf token\")",
        ]),
        ({"server": "vllm", "model": S3, "env": {"HF_TOKEN": "x"}, "envSecrets": {"HF_TOKEN": "hfToken"}},
         [f'{KEY}.envSecrets.HF_TOKEN is also set in env (got "HF_TOKEN")']),
        ({"image": "a/b:1", "model": {"uri": "hf://Qwen/Qwen2.5-0.5B"}},
         [f'{KEY}.model.uri must be s3:// for server reference (got "hf://Qwen/Qwen2.5-0.5B")']),
    ],
)  # fmt: skip
def test_bad_server_config_names_its_key(svc, expected) -> None:
    assert problems(**svc) == expected


def test_presets_fill_image_port_and_model_name() -> None:
    config = stack_config("dev")
    config[INF]["x"] = {"pool": "gpu", "server": "triton", "model": {"uri": "s3://acme-models/triton/resnet50"}}
    svc = settings_of(config).inference["x"]
    assert (svc.image, svc.port, svc.model.served_name) == ("nvcr.io/nvidia/tritonserver:25.09-py3", 8000, "resnet50")
    assert svc.model.location.prefix == "triton/resnet50/"  # a trailing slash is implied


def test_a_secret_config_key_named_by_env_secrets_is_no_unknown_key() -> None:
    config = stack_config("dev")
    config[INF]["x"] = {"pool": "gpu", "server": "vllm", "model": {"uri": "hf://Qwen/Qwen2.5-0.5B"},
                        "envSecrets": {"HF_TOKEN": "hfToken"}}  # fmt: skip
    config["gpu-inference:hfToken"] = {"secure": "v1:abc"}
    assert "hfToken" not in raw_from_stack_config(config)
    config["gpu-inference:otherToken"] = "x"
    with pytest.raises(ConfigError) as err:
        raw_from_stack_config(config)
    assert err.value.lines[0].startswith("gpu-inference:otherToken is not a known config key")


def test_plan_exits_2_naming_the_key_and_writes_nothing(tmp_path: Path) -> None:
    config = stack_config("dev")
    config[INF]["chat"] = {"pool": "gpu", "server": "vllm"}
    stack = tmp_path / "Pulumi.variant.yaml"
    stack.write_text(yaml.safe_dump({"config": config}))
    out = tmp_path / "out"
    proc = run_plan("--stack", "dev", "--out", str(out), "--config", str(stack))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "gpu-inference:inference.chat.model.uri is required for server vllm" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
