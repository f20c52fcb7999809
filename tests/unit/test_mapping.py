"""Settings -> component Args (infra/mapping.py): the one place components meet the config model."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
from pathlib import Path

import pytest

from domain.settings import ClusterSettings, PoolSettings
from infra import mapping
from infra.nodepools import CacheVolume, DisruptionBudget
from infra.placement import PoolPlacement
from tests.unit.helpers import settings_of
from tools.plan.run import ROOT

INFRA = ROOT / "infra"
MAPPING = INFRA / "mapping.py"


def _settings_imports(path: Path) -> list[str]:
    """Every `domain.settings` import in a module, however it is spelt (submodules included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [
                a.name for a in node.names if a.name == "domain.settings" or a.name.startswith("domain.settings.")
            ]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "domain.settings" or node.module.startswith("domain.settings."):
                found.append(node.module)
            elif node.module == "domain":
                found += [f"domain.{a.name}" for a in node.names if a.name == "settings"]
    return found


def test_only_the_mapping_module_imports_the_settings() -> None:
    offenders = {
        str(path.relative_to(ROOT)): imports
        for path in sorted(INFRA.rglob("*.py"))
        if path != MAPPING and (imports := _settings_imports(path))
    }
    assert offenders == {}, f"components must take Args built by infra/mapping.py, not settings models: {offenders}"
    assert _settings_imports(MAPPING), "infra/mapping.py no longer reads domain.settings: update this test"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from domain.settings import PoolSettings", ["domain.settings"]),
        ("from domain import contract, settings", ["domain.settings"]),
        ("import domain.settings.pools", ["domain.settings.pools"]),
        ("from domain.settings_extra import X\nfrom domain import contract", []),
    ],
)
def test_the_import_check_sees_every_spelling(tmp_path, source, expected) -> None:
    module = tmp_path / "m.py"
    module.write_text(source)
    assert _settings_imports(module) == expected


def _args_classes():
    """Dataclasses defined in the component modules under infra/ (the Args and their specs)."""
    for path in sorted(INFRA.rglob("*.py")):
        if path.name.startswith("__") or path == MAPPING:
            continue
        module = importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and dataclasses.is_dataclass(cls):
                yield f"{module.__name__}.{name}", cls


def test_every_args_and_spec_is_a_frozen_dataclass() -> None:
    classes = dict(_args_classes())
    names = {name.rsplit(".", 1)[1] for name in classes}
    assert {"NetworkArgs", "ClusterArgs", "NodePoolsArgs", "NodePoolSpec", "ServiceSpec", "JobSpec"} <= names
    thawed = sorted(name for name, cls in classes.items() if not cls.__dataclass_params__.frozen)
    assert thawed == [], f"Args must be frozen dataclasses: {thawed}"


def test_a_shared_pool_maps_to_slices_everywhere() -> None:
    pool = settings_of("dev").node_pools["gpu-shared"]  # g6, maxGpus 2, timeSlicingReplicas 4
    spec = mapping.node_pool_spec(pool)
    assert (spec.gpu, spec.time_slicing_replicas, spec.gpu_limit) == ("shared", 4, 8)  # the limit counts slices
    assert spec.gpu_counts == (1, 4, 8) and spec.max_cpu == 48
    assert spec.budgets == (DisruptionBudget(nodes="10%"),) and spec.cache_volume is None
    assert spec.root_volume_gib == 200  # a GPU pool's default
    assert mapping.device_plugin_args(settings_of("dev").node_pools).time_slicing == {"gpu-shared": 4}
    assert mapping.placement("gpu-shared", pool) == PoolPlacement("gpu-shared", "shared", (1, 4, 8))
    warm = mapping.warm_pools(settings_of("dev").node_pools)
    assert sorted(warm) == ["gpu", "gpu-shared"]  # no CPU pool
    assert (warm["gpu-shared"].warm_gpus, warm["gpu-shared"].pre_pull, warm["gpu-shared"].cache_images) == (0, True, ())


def test_an_image_cache_maps_to_a_volume_and_pre_pull_setting() -> None:
    pool = PoolSettings.parse(
        {
            "gpu": "dedicated",
            "instanceFamilies": ["g6"],
            "capacityTypes": ["on-demand"],
            "maxGpus": 4,
            "disruptionBudgets": [{"nodes": "0", "schedule": "@daily", "duration": "10m", "reasons": ["Drifted"]}],
            "imageCache": {"snapshotId": "snap-0123456789abcdef0", "volumeGib": 300, "prePull": False, "images": []},
        }
    )
    spec = mapping.node_pool_spec(pool)
    assert spec.cache_volume == CacheVolume("snap-0123456789abcdef0", 300)
    assert [b.as_karpenter() for b in spec.budgets] == [
        b.model_dump(exclude_none=True) for b in pool.disruption_budgets
    ]
    assert not mapping.warm_pools({"gpu": pool})["gpu"].pre_pull
    # A cache without a snapshot only pre-pulls: the nodes get no extra volume.
    prepull_only = pool.model_copy(update={"image_cache": pool.image_cache.model_copy(update={"snapshot_id": None})})
    assert mapping.node_pool_spec(prepull_only).cache_volume is None


def test_a_scale_to_zero_service_wakes_through_the_interceptor() -> None:
    dev = settings_of("dev")
    small = mapping.inference_service_args(dev, "embed-small", prometheus_url="http://p:9090")
    assert small.service.scaling.min_replicas == 0 and small.service.scaling.wake_up_query is None
    assert small.service.scaling.wakes_through_interceptor
    assert small.pool == PoolPlacement("gpu-shared", "shared", (1, 4, 8))
    assert not mapping.inference_service_args(dev, "llm", prometheus_url="x").service.scaling.wakes_through_interceptor
    # A wake-up query of its own replaces the interceptor.
    svc = dev.inference["embed-small"]
    queried = svc.model_copy(update={"scaling": svc.scaling.model_copy(update={"wake_up_query": "sum(up)"})})
    assert not mapping.service_spec(queried).scaling.wakes_through_interceptor


def test_a_private_endpoint_maps_to_no_public_cidrs_and_one_source_each() -> None:
    settings = ClusterSettings.parse(
        {
            "name": "gpuinf-test",
            "endpointPublicAccess": False,
            "privateAccess": {"cidrs": ["10.60.8.0/24"], "securityGroupIds": ["sg-0123456789abcdef0"]},
        }
    )
    args = mapping.cluster_args(settings, tags={}, vpc_id="v", public_subnet_ids=[], private_subnet_ids=[])
    assert args.public_access_cidrs == ()
    assert (args.private_access_cidrs, args.private_access_security_group_ids) == (
        ("10.60.8.0/24",),
        ("sg-0123456789abcdef0",),
    )
    public = mapping.cluster_args(
        ClusterSettings.parse({"name": "gpuinf-test"}), tags={}, vpc_id="v", public_subnet_ids=[], private_subnet_ids=[]
    )
    assert public.public_access_cidrs == ("0.0.0.0/0",) and public.private_access_cidrs == ()


def test_the_load_generator_follows_its_target_and_is_absent_without_one() -> None:
    dev = settings_of("dev")
    args = mapping.load_generator_args(dev)
    assert args is not None and (args.deployment_name, args.target, args.cpu_pool) == ("loadgen", "llm", "cpu")
    assert mapping.load_generator_args(dev.model_copy(update={"load_generator": None})) is None
