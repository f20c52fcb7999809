"""domain/cost.py: prices cross-checked against the catalog, and estimates recomputed by hand."""

from __future__ import annotations

import json
import re

import pytest

from domain import catalog, cost
from tests.conftest import in_region, run_plan, settings_of, stack_config


def test_every_catalog_family_has_prices_and_matching_gpu_counts():
    book = cost.price_book("us-east-1")
    for name, family in catalog.FAMILIES.items():
        types = book.family_types(name)
        assert types, f"no prices for family {name}"
        if family.is_gpu:
            counts = tuple(sorted({t.gpus for t in types}))
            assert counts == family.gpu_counts, f"{name}: prices list GPU counts {counts}, catalog {family.gpu_counts}"
            per_gpu = max(t.vcpus // t.gpus for t in types)
            assert per_gpu == family.max_vcpus_per_gpu, f"{name}: prices give {per_gpu} vCPUs per GPU at most"
    for itype in book.gpu_types.values():
        assert catalog.FAMILIES[itype.name.split(".")[0]].is_gpu, itype.name
        assert itype.vcpus > 0 and itype.memory_gib > 0 and itype.usd_per_hour > 0, itype


def test_price_file_records_source_and_date():
    about = json.loads(cost.PRICES_FILE.read_text())["about"]
    assert about["source"] and re.fullmatch(r"\d{4}-\d{2}-\d{2}", about["asOf"])


def test_dev_gpu_pool_worst_case_by_hand():
    # dev `gpu`: g5 + g6, maxGpus 4, maxCpu 96. Per type, instances = min(4 / gpus, 96 / vcpus):
    #   g5.24xlarge (96 vCPU, 4 GPU, $8.144): min(1, 1) = 1      -> $8.144
    #   g5.48xlarge (192 vCPU, 8 GPU, $16.288): min(0.5, 0.5)     -> $8.144
    #   g5.16xlarge (64 vCPU, 1 GPU, $4.096): min(4, 1.5) = 1.5   -> $6.144
    #   g6.24xlarge (96 vCPU, 4 GPU, $6.6752): 1                  -> $6.6752
    # so the worst case is $8.144 and the CPU limit binds first (ties go to the first type seen).
    settings = settings_of(stack_config("dev"))
    estimate = cost.estimate(cost.CostInputs.from_settings(settings))
    gpu = estimate.pools["gpu"]
    assert gpu.worst_per_hour == pytest.approx(8.144)
    assert gpu.worst_type in {"g5.24xlarge", "g5.48xlarge"}
    # Idle: control plane $0.10 + 2 x m7i.large ($0.1008) + 2 x 50 GiB gp3 ($0.08 per GiB-month / 730 h) + 1 NAT ($0.045).
    assert estimate.idle_per_hour == pytest.approx(0.10 + 2 * 0.1008 + 2 * 50 * 0.08 / 730 + 0.045)
    assert estimate.worst_per_hour == pytest.approx(
        estimate.idle_per_hour + sum(p.worst_per_hour for p in estimate.pools.values())
    )


def test_cpu_pool_prices_by_vcpu_at_the_priciest_family():
    # prod `cpu`: c7i, m7i, r7i at maxCpu 512; r7i is the priciest per vCPU ($0.06615).
    settings = settings_of(stack_config("prod"))
    pool = cost.estimate(cost.CostInputs.from_settings(settings)).pools["cpu"]
    assert pool.worst_per_hour == pytest.approx(512 * 0.06615)
    assert (pool.worst_type, pool.binding_limit) == ("r7i.*", "cpu")


def test_gpu_limit_binds_when_cpu_allows_more():
    pool = cost.PoolCostInputs("big", ("p5",), max_cpu=10_000, max_gpus=16)
    usd, itype, count, limit = cost.pool_worst_case(pool, cost.price_book("us-east-1"))
    # p5.4xlarge: 16 x $6.88 = $110.08 and p5.48xlarge: 2 x $55.04 = $110.08 tie; the first one seen wins.
    assert usd == pytest.approx(110.08) and limit == "nvidia.com/gpu"
    assert (itype, count) in {("p5.4xlarge", 16), ("p5.48xlarge", 2)}


def test_memory_limit_bounds_a_pool():
    pool = cost.PoolCostInputs("mem", ("r7i",), max_cpu=512, max_memory_gib=1024)
    usd, _, count, limit = cost.pool_worst_case(pool, cost.price_book("us-east-1"))
    # r7i has 8 GiB per vCPU: 1024 GiB is 128 vCPUs, fewer than the 512 the cpu limit allows.
    assert (limit, count) == ("memory", 128) and usd == pytest.approx(128 * 0.06615)


def test_warm_headroom_is_priced_at_the_cheapest_type_per_gpu():
    config = stack_config("dev")
    config["gpu-inference:nodePools"]["gpu"]["warmGpus"] = 2
    estimate = cost.estimate(cost.CostInputs.from_settings(settings_of(config)))
    # cheapest per GPU among g5/g6: g6.xlarge at $0.8048 for one GPU.
    assert estimate.pools["gpu"].headroom_per_hour == pytest.approx(2 * 0.8048)
    assert estimate.headroom_per_hour == pytest.approx(2 * 0.8048)


def test_extended_support_versions_cost_more():
    config = stack_config("dev")
    config["gpu-inference:cluster"]["version"] = "1.32"
    estimate = cost.estimate(cost.CostInputs.from_settings(settings_of(config)))
    assert estimate.idle["EKS control plane (extended support)"] == pytest.approx(0.60)


def test_a_region_without_rates_says_so():
    config = in_region(stack_config("dev"), "eu-west-1")
    estimate = cost.estimate(cost.CostInputs.from_settings(settings_of(config)))
    assert estimate.priced_as == "us-east-1"
    assert any("no rates for eu-west-1" in n for n in estimate.notes), estimate.notes


def test_plan_writes_cost_to_summary_and_metadata(tmp_path):
    out = tmp_path / "plan"
    proc = run_plan("--stack", "dev", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((out / "resources.json").read_text())["metadata"]["cost"]
    assert meta["pools"]["gpu"]["worstCasePerHour"] == pytest.approx(8.144)
    summary = (out / "summary.md").read_text()
    assert f"Idle: **${meta['idlePerHour']:,.2f}/h**" in summary
    assert f"Worst case: **${meta['worstCasePerHour']:,.2f}/h**" in summary
    assert "| gpu | $8.14 |" in summary
