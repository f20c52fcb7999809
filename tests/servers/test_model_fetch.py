"""The model download step as rendered: the init container's exact `aws s3 sync` arguments run
through the AWS CLI (awscli from PyPI, in-process so moto's mock intercepts it) against moto with
IAM enforced, with credentials whose only policy is the service's model-read document as the
program writes it.

Objects under the prefix arrive; a neighbouring prefix that merely starts alike is not copied;
reading or writing anything outside the prefix is denied by that policy (moto enforces Action
and Resource); listing outside the prefix is checked with a small evaluator, as moto ignores
StringLike conditions. (A moto IAM user holds
the document instead of the Pod Identity role: moto evaluates the same statements, conditions
included, for a user's access keys; a role would need STS, which is beside the point here.)
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import boto3
import pytest

from domain import servers
from infra.workloads import model_server
from infra.workloads.model_server import ModelSpec, ServerSpec
from tests.support import iam_eval

clidriver = pytest.importorskip("awscli.clidriver", reason="the AWS CLI (requirements-dev.txt awscli) is not installed")

BUCKET = "acme-models"
PREFIX = "models/qwen/"
INSIDE = {f"{PREFIX}config.json": b"{}", f"{PREFIX}model.safetensors": b"w" * 70_000, f"{PREFIX}tok/vocab.txt": b"a"}
OUTSIDE = {"models/qwen-other/model.safetensors": b"x", "secrets/key.txt": b"k"}


def fetch_spec() -> ServerSpec:
    location = servers.parse_model_uri(f"s3://{BUCKET}/{PREFIX}")
    assert location is not None
    model = ModelSpec(f"s3://{BUCKET}/{PREFIX}", "s3", "qwen", 120, 10, s3_uri=location.s3_uri)
    return ServerSpec("vllm", model, (), {}, (), "/health", "/health", "/metrics", None, "")


def aws(*args: str) -> tuple[int, str]:
    """Run the AWS CLI in this process: (exit code, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = clidriver.create_clidriver().main(list(args))
    return code, err.getvalue()


@pytest.fixture()
def reader(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A bucket with objects in and beside the prefix, and the keys of a user holding only the model policy."""
    from moto import mock_aws, settings
    from moto.core import authorization

    for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    with mock_aws():
        admin = {"region_name": "us-west-2", "aws_access_key_id": "admin", "aws_secret_access_key": "admin"}
        s3, iam = boto3.client("s3", **admin), boto3.client("iam", **admin)
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        for key, body in {**INSIDE, **OUTSIDE}.items():
            s3.put_object(Bucket=BUCKET, Key=key, Body=body)
        location = servers.parse_model_uri(f"s3://{BUCKET}/{PREFIX}")
        assert location is not None
        iam.create_user(UserName="model-reader")
        iam.put_user_policy(
            UserName="model-reader",
            PolicyName="model-read",
            PolicyDocument=json.dumps(servers.model_read_policy(location)),
        )
        keys = iam.create_access_key(UserName="model-reader")["AccessKey"]
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", keys["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", keys["SecretAccessKey"])
        # From here on moto authorizes every request against the caller's policies.
        before = settings.INITIAL_NO_AUTH_ACTION_COUNT
        settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
        authorization.ActionAuthenticatorMixin.request_count = 0
        try:
            yield
        finally:
            settings.INITIAL_NO_AUTH_ACTION_COUNT = before


def test_sync_copies_the_prefix_and_the_policy_denies_the_rest(reader, tmp_path: Path) -> None:
    fetch = model_server.fetch_container(fetch_spec())
    assert fetch is not None
    # The pod runs `timeout 120s aws s3 sync ...`; here the CLI runs in-process (moto's mock is in-process).
    assert fetch["command"] == ["timeout", "120s", "aws", "s3", "sync"]
    cache = tmp_path / "models"
    args = [
        str(cache) + a.removeprefix(servers.MODEL_ROOT) if a.startswith(servers.MODEL_ROOT) else a
        for a in fetch["args"]
    ]
    assert args[:2] == [f"s3://{BUCKET}/{PREFIX}", f"{cache}/qwen/"]
    code, err = aws("s3", "sync", *args)
    assert code == 0, err
    target = cache / "qwen"
    arrived = {str(p.relative_to(target)): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert arrived == {k.removeprefix(PREFIX): v for k, v in INSIDE.items()}

    code, err = aws("s3api", "get-object", "--bucket", BUCKET, "--key", "secrets/key.txt", str(tmp_path / "k"))
    assert code != 0 and "AccessDenied" in err, err
    code, err = aws(
        "s3api", "put-object", "--bucket", BUCKET, "--key", f"{PREFIX}planted", "--body", str(target / "config.json")
    )
    assert code != 0 and "AccessDenied" in err, err
    code, err = aws("s3api", "list-objects-v2", "--bucket", BUCKET, "--prefix", PREFIX)
    assert code == 0, err


@pytest.mark.parametrize(
    ("action", "resource", "context", "expected"),
    [
        ("s3:GetObject", f"arn:aws:s3:::{BUCKET}/{PREFIX}model.safetensors", {}, True),
        ("s3:GetObject", f"arn:aws:s3:::{BUCKET}/{PREFIX}tok/vocab.txt", {}, True),
        ("s3:GetObject", f"arn:aws:s3:::{BUCKET}/models/qwen-other/model.safetensors", {}, False),
        ("s3:GetObject", f"arn:aws:s3:::{BUCKET}/secrets/key.txt", {}, False),
        ("s3:GetObject", f"arn:aws:s3:::other-bucket/{PREFIX}model.safetensors", {}, False),
        ("s3:ListBucket", f"arn:aws:s3:::{BUCKET}", {"s3:prefix": PREFIX}, True),  # what `aws s3 sync` sends
        ("s3:ListBucket", f"arn:aws:s3:::{BUCKET}", {"s3:prefix": f"{PREFIX}tok/"}, True),
        ("s3:ListBucket", f"arn:aws:s3:::{BUCKET}", {"s3:prefix": "secrets/"}, False),
        ("s3:ListBucket", f"arn:aws:s3:::{BUCKET}", {"s3:prefix": "models/qwen-other/"}, False),
        ("s3:ListBucket", f"arn:aws:s3:::{BUCKET}", {"s3:prefix": ""}, False),  # the whole bucket
        ("s3:ListBucket", f"arn:aws:s3:::{BUCKET}", {}, False),  # no prefix at all
        ("s3:PutObject", f"arn:aws:s3:::{BUCKET}/{PREFIX}planted", {}, False),
        ("s3:DeleteObject", f"arn:aws:s3:::{BUCKET}/{PREFIX}model.safetensors", {}, False),
    ],
)  # fmt: skip
def test_the_policy_as_written_allows_only_the_prefix(action, resource, context, expected) -> None:
    """moto ignores StringLike conditions, so the listing half is evaluated with tests/support/iam_eval.py."""
    location = servers.parse_model_uri(f"s3://{BUCKET}/{PREFIX}")
    assert location is not None
    assert iam_eval.allowed(servers.model_read_policy(location), action, resource, context) is expected
