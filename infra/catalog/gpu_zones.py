"""The GPU zone catalog (gpu_zones.yaml): the zones of each region that offer a GPU accelerator."""

from __future__ import annotations

from infra.catalog.files import load


def gpu_zones(cloud: str, accelerator: str | None, region: str) -> tuple[str, ...]:
    """The zones of `region` that offer `accelerator`; empty when the catalog has not read that region."""
    return tuple(load("gpu_zones").get(cloud, {}).get(accelerator, {}).get(region) or ())


def gpu_zones_read_on() -> str:
    return str(load("gpu_zones")["read_on"])
