"""tools/refresh_prices.py against a real boto3 Pricing client whose calls are stubbed.

moto does not implement the Pricing API ("Not yet implemented"), so botocore's
Stubber answers `get_products`: it still checks every request against the
service model, so the filters the script sends are valid API input.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from domain.cost import PRICES_FILE

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "refresh_prices.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("refresh_prices", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def product(usd: str) -> str:
    dimension = {"unit": "Hrs", "pricePerUnit": {"USD": usd}}
    return json.dumps({"terms": {"OnDemand": {"T1": {"priceDimensions": {"D1": dimension}}}}})


def stubbed_client(script, prices: dict[str, str | None], region: str):
    client = boto3.client("pricing", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    stub = Stubber(client)
    for instance_type, usd in prices.items():
        stub.add_response(
            "get_products",
            {"PriceList": [product(usd)] if usd else [], "FormatVersion": "aws_v1"},
            {
                "ServiceCode": "AmazonEC2",
                "Filters": script.product_filters(instance_type, region),
                "FormatVersion": "aws_v1",
                "MaxResults": 10,
            },
        )
    stub.activate()
    return client, stub


def asked_types() -> list[str]:
    data = json.loads(PRICES_FILE.read_text())["regions"]["us-east-1"]
    return sorted(data["gpuInstances"]) + [f"{f}.large" for f in sorted(data["cpuFamilies"])]


def test_prices_are_read_from_the_api_and_missing_ones_kept(script, capsys):
    prices = {t: "1.5" for t in asked_types()}
    prices["g6.xlarge"] = None  # not offered: keep the old figure
    prices["m7i.large"] = "0.2"
    client, stub = stubbed_client(script, prices, "eu-west-1")
    data = json.loads(PRICES_FILE.read_text())
    block, report = script.refreshed(data, "eu-west-1", client)
    stub.assert_no_pending_responses()
    assert block["gpuInstances"]["g5.xlarge"][3] == 1.5
    assert block["gpuInstances"]["g6.xlarge"] == data["regions"]["us-east-1"]["gpuInstances"]["g6.xlarge"]
    assert block["cpuFamilies"]["m7i"] == [4, 0.1]  # .large is 2 vCPUs: $0.2 / 2 per vCPU
    assert any(line.startswith("g6.xlarge") and "kept" in line for line in report)


def test_on_demand_price_parsing(script):
    assert script.on_demand_usd([product("0.8048")]) == 0.8048
    assert script.on_demand_usd([]) is None
    with pytest.raises(ValueError, match="ambiguous"):
        script.on_demand_usd([product("1"), product("2")])


def test_bad_region_exits_2(script, capsys):
    with pytest.raises(SystemExit) as exit_:
        script.main(["--region", "Mars"])
    assert exit_.value.code == 2
    assert "--region must be an AWS region such as us-east-1 (got 'Mars')" in capsys.readouterr().err


def test_no_credentials_is_a_clear_error(script, capsys, monkeypatch):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert script.main(["--region", "us-east-1"]) == 1
    assert "no AWS credentials found" in capsys.readouterr().err
