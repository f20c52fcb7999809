"""Refresh domain/data/prices.json from the AWS Price List API (needs AWS credentials).

    .venv/bin/python tools/refresh_prices.py --region us-east-1 [--write]

For one region, asks the Pricing API for the on-demand Linux (shared tenancy)
hourly price of every GPU instance type in the file and of the `.large` size of
every CPU family (CPU prices scale linearly with size, so the file keeps a
price per vCPU). Prints old and new side by side; `--write` stores the new
figures under `regions.<region>` with today's date in `about.asOf`. EKS, NAT and
gp3 rates are left as they are (their price list entries are not per instance).
Exit 0 on success, 1 on an AWS error, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from typing import Any

from domain.cost import PRICES_FILE

# The Pricing API is served from a few regions only; its data covers all of them.
PRICING_ENDPOINT_REGION = "us-east-1"
REGION = re.compile(r"^[a-z]{2}-[a-z]+-[0-9]$")


def product_filters(instance_type: str, region: str) -> list[dict[str, str]]:
    fields = {
        "instanceType": instance_type,
        "regionCode": region,
        "operatingSystem": "Linux",
        "tenancy": "Shared",
        "preInstalledSw": "NA",
        "capacitystatus": "Used",
        "licenseModel": "No License required",
    }
    return [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in fields.items()]


def on_demand_usd(price_list: list[str]) -> float | None:
    """The hourly on-demand USD price in a GetProducts answer (one product expected)."""
    prices = set()
    for text in price_list:
        product = json.loads(text)
        for term in (product.get("terms", {}).get("OnDemand") or {}).values():
            for dimension in (term.get("priceDimensions") or {}).values():
                if dimension.get("unit") in ("Hrs", "Hours"):
                    prices.add(float(dimension["pricePerUnit"]["USD"]))
    if len(prices) > 1:
        raise ValueError(f"ambiguous on-demand prices {sorted(prices)}")
    return prices.pop() if prices else None


def fetch(client: Any, instance_type: str, region: str) -> float | None:
    answer = client.get_products(
        ServiceCode="AmazonEC2", Filters=product_filters(instance_type, region), FormatVersion="aws_v1", MaxResults=10
    )
    return on_demand_usd(answer.get("PriceList") or [])


def refreshed(data: dict[str, Any], region: str, client: Any) -> tuple[dict[str, Any], list[str]]:
    """(new region block, report lines). Types the API does not price keep their old figure, reported."""
    base = data["regions"].get(region) or data["regions"][data["sameRatesAs"].get(region, "us-east-1")]
    block = json.loads(json.dumps(base))
    report = []
    for name, (vcpus, memory, gpus, old) in sorted(block["gpuInstances"].items()):
        new = fetch(client, name, region)
        report.append(_line(name, old, new))
        if new is not None:
            block["gpuInstances"][name] = [vcpus, memory, gpus, new]
    for family, (gib_per_vcpu, old_per_vcpu) in sorted(block["cpuFamilies"].items()):
        large = fetch(client, f"{family}.large", region)
        new = None if large is None else round(large / 2, 6)
        report.append(_line(f"{family} (per vCPU)", old_per_vcpu, new))
        if new is not None:
            block["cpuFamilies"][family] = [gib_per_vcpu, new]
    return block, report


def _line(name: str, old: float, new: float | None) -> str:
    if new is None:
        return f"{name:24} {old:>10} -> (not priced in this region; kept)"
    change = "" if new == old else f"  ({(new - old) / old:+.1%})"
    return f"{name:24} {old:>10} -> {new}{change}"


def main(argv: list[str] | None = None, client: Any = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/refresh_prices.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--region", required=True)
    parser.add_argument("--write", action="store_true", help="store the new prices in domain/data/prices.json")
    args = parser.parse_args(argv)
    if not REGION.match(args.region):
        parser.error(f"--region must be an AWS region such as us-east-1 (got {args.region!r})")
    data = json.loads(PRICES_FILE.read_text())
    try:
        if client is None:
            import boto3

            client = boto3.client("pricing", region_name=PRICING_ENDPOINT_REGION)
        block, report = refreshed(data, args.region, client)
    except Exception as exc:  # botocore's errors: no credentials, access denied, throttling
        name = type(exc).__name__
        if name in ("NoCredentialsError", "PartialCredentialsError"):
            print("error: no AWS credentials found (standard chain: env, profile, SSO, instance role)", file=sys.stderr)
        else:
            print(f"error: the Pricing API failed: {name}: {exc}", file=sys.stderr)
        return 1
    print("\n".join(report))
    if args.write:
        data["regions"][args.region] = block
        data["sameRatesAs"].pop(args.region, None)
        data["about"]["asOf"] = dt.date.today().isoformat()
        data["about"]["compiledBy"] = f"tools/refresh_prices.py from the AWS Price List API ({args.region})"
        PRICES_FILE.write_text(json.dumps(data, indent=2) + "\n")
        print(f"wrote {PRICES_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
