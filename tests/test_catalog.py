"""The catalog: every data file says when its figures were read and where from, each price carries the date
and source of its region's list, and the shapes the planner needs are all there."""

from datetime import date

import pytest

from infra import catalog
from infra.catalog.files import CATALOG_DIR, load
from infra.catalog.gpu_zones import gpu_zones

CATALOG_FILES = sorted(path.stem for path in CATALOG_DIR.glob("*.yaml"))


def test_the_catalog_holds_every_fact_file():
    assert CATALOG_FILES == ["gpu_quotas", "gpu_zones", "gpus", "instances", "kubernetes_versions", "models", "performance",
                             "prices"]


@pytest.mark.parametrize("name", CATALOG_FILES)
def test_every_catalog_file_carries_its_date_and_sources(name):
    data = load(name)
    date.fromisoformat(str(data["read_on"]))
    sources = data.get("sources") or [
        source for cloud in data.get("clouds", {}).values() for source in cloud.get("sources", [])]
    assert sources and all(isinstance(source, str) and source.strip() for source in sources), name


def test_every_price_carries_the_date_and_source_of_its_list():
    for cloud in ("aws", "gcp"):
        for region, block in load("prices")[cloud].items():
            assert block["as_of"] and block["source"].startswith("https://"), (cloud, region)
            for instance, usd in block["usd_per_hour"].items():
                catalog.instance_type(cloud, instance)  # a price for a shape the catalog describes
                price = catalog.on_demand_price(cloud, instance, region)
                assert price.usd_per_hour == usd > 0 and price.as_of == block["as_of"] and price.source == block["source"]


def test_every_gpu_shape_names_a_catalog_gpu():
    for cloud in ("aws", "gcp"):
        for shape in catalog.gpu_instances(cloud):
            assert shape.gpu in catalog.gpu_catalog(), shape
            assert shape.gpus in (1, 2, 4, 8), shape


@pytest.mark.parametrize(("cloud", "family", "counts"), [
    ("aws", "g4dn.", {1, 4, 8}), ("aws", "g5.", {1, 4, 8}), ("aws", "g6.", {1, 4, 8}), ("aws", "g6e.", {1, 4, 8}),
    ("aws", "p4d.", {8}), ("aws", "p4de.", {8}), ("aws", "p5.", {1, 8}), ("aws", "p5e.", {8}), ("aws", "p5en.", {8}),
    ("gcp", "g2-", {1, 2, 4, 8}), ("gcp", "a2-highgpu-", {1, 2, 4, 8}), ("gcp", "a2-ultragpu-", {1, 2, 4, 8}),
    ("gcp", "a3-highgpu-", {1, 2, 4, 8}), ("gcp", "a3-megagpu-", {8}), ("gcp", "a3-ultragpu-", {8}),
])
def test_gpu_families_have_every_size_the_cloud_sells(cloud, family, counts):
    assert {s.gpus for s in catalog.gpu_instances(cloud) if s.instance.startswith(family)} == counts


@pytest.mark.parametrize(("cloud", "family"), [
    ("aws", "t3."), ("aws", "m6i."), ("aws", "m7i."), ("aws", "c6i."), ("aws", "c7i."), ("aws", "r6i."),
    ("gcp", "e2-standard-"), ("gcp", "n2-standard-"), ("gcp", "c3-standard-"),
])
def test_system_families_are_described_and_priced(cloud, family):
    shapes = [name for name in catalog.known_instances(cloud) if name.startswith(family)]
    assert len(shapes) >= 5
    region = {"aws": "us-east-1", "gcp": "us-central1"}[cloud]
    for name in shapes:
        shape = catalog.instance_type(cloud, name)
        assert shape.vcpus > 0 and shape.memory_gib > 0 and not shape.gpus
        assert catalog.on_demand_price(cloud, name, region) is not None, name
        if cloud == "aws":
            assert shape.max_pods, name


def test_a_region_the_catalog_has_not_read_is_priced_at_the_reference_region_and_says_so():
    price = catalog.on_demand_price("aws", "p5.48xlarge", "eu-west-1")
    assert price.region == "us-east-1"
    assert "us-east-1" in price.describe("eu-west-1") and "eu-west-1 is not in it" in price.describe("eu-west-1")


def test_the_model_family_is_in_the_catalog():
    repos = set(catalog.model_catalog())
    for size in ("2B", "7B", "72B"):
        for variant in ("", "-AWQ", "-GPTQ-Int4", "-GPTQ-Int8"):
            assert f"Qwen/Qwen2-VL-{size}-Instruct{variant}" in repos


@pytest.mark.parametrize(("model", "tp", "gpu", "kernel", "ok"), [
    ("Qwen/Qwen2-VL-72B-Instruct-GPTQ-Int4", 4, "L4", "gptq_marlin", True),
    ("Qwen/Qwen2-VL-72B-Instruct-GPTQ-Int8", 4, "A100-80GB", "gptq_marlin", True),
    ("Qwen/Qwen2-VL-72B-Instruct", 4, "A100-80GB", "none", True),  # 16-bit: 34 GiB of weights per GPU
    ("Qwen/Qwen2-VL-72B-Instruct", 4, "L4", "none", False),
    ("Qwen/Qwen2-VL-7B-Instruct", 4, "T4", "none", False),  # bfloat16 needs SM 8.0
    ("Qwen/Qwen2-VL-7B-Instruct-GPTQ-Int4", 1, "T4", "gptq", True),  # Marlin needs SM 8.0: the plain kernel
    ("Qwen/Qwen2-VL-2B-Instruct-AWQ", 4, "L4", "awq_marlin", False),  # 8960 / 4 = 2240 is no multiple of 128
])
def test_preflight_rules_for_each_member(model, tp, gpu, kernel, ok):
    from infra.preflight import catalog_request, run_preflight
    verdict = run_preflight(catalog_request(model, tensor_parallel_size=tp, gpu=gpu, max_model_len=8192,
                                            max_num_seqs=16))
    assert (verdict.kernel, verdict.ok) == (kernel, ok), [c.message for c in verdict.failures]


def test_every_priced_gcp_gpu_shape_has_zones_in_its_price_region():
    """The planner chooses a GCP shape only where the zone catalog places it; a priced shape without zones in
    its price region would be listed and never chosen (as the L4 shapes were before 2026-12-04)."""
    for region, block in load("prices")["gcp"].items():
        for shape in catalog.gpu_instances("gcp"):
            if shape.instance in block["usd_per_hour"]:
                assert gpu_zones("gcp", shape.accelerator, region), (shape.instance, shape.accelerator, region)
