"""The GPU catalog (gpus.yaml): memory, compute capability and peak rates of each GPU, and the machine shapes
(instances.yaml) that carry it, priced at each cloud's reference region (prices.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from infra.catalog.files import CatalogError, load
from infra.catalog.instances import gpu_instances
from infra.catalog.prices import on_demand_price, reference_region

CLOUDS = ("aws", "gcp")


@dataclass(frozen=True)
class InstanceShape:
    """A GPU machine shape with its price in the cloud's reference region (None: no published price)."""

    cloud: str
    instance: str
    gpus: int
    usd_per_hour: float | None
    accelerator: str | None = None


@dataclass(frozen=True)
class GpuSpec:
    name: str
    memory_gib: float
    compute_capability: tuple[int, int]
    shapes: tuple[InstanceShape, ...]
    memory_bandwidth_gbs: float = 0.0
    fp16_tflops: float = 0.0
    interconnect_gbs: float = 0.0

    @property
    def capability_int(self) -> int:
        """vLLM's integer form: 8.6 -> 86."""
        major, minor = self.compute_capability
        return major * 10 + minor

    @property
    def supports_bfloat16(self) -> bool:
        return self.compute_capability >= (8, 0)

    def shapes_in(self, cloud: str, gpus: int | None = None) -> tuple[InstanceShape, ...]:
        return tuple(s for s in self.shapes if s.cloud == cloud and (gpus is None or s.gpus == gpus))


def _capability(text: str) -> tuple[int, int]:
    major, minor = str(text).split(".")
    return int(major), int(minor)


def _shapes(gpu: str) -> tuple[InstanceShape, ...]:
    shapes = []
    for cloud in CLOUDS:
        region = reference_region(cloud)
        for shape in gpu_instances(cloud, gpu):
            price = on_demand_price(cloud, shape.instance, region)
            shapes.append(InstanceShape(cloud, shape.instance, shape.gpus,
                                        price.usd_per_hour if price else None, shape.accelerator))
    return tuple(shapes)


@lru_cache(maxsize=1)
def gpu_catalog() -> dict[str, GpuSpec]:
    return {
        name: GpuSpec(
            name=name,
            memory_gib=float(entry["memory_gib"]),
            compute_capability=_capability(entry["compute_capability"]),
            shapes=_shapes(name),
            memory_bandwidth_gbs=float(entry["memory_bandwidth_gbs"]),
            fp16_tflops=float(entry["fp16_tflops"]),
            interconnect_gbs=float(entry["interconnect_gbs"]),
        )
        for name, entry in load("gpus")["gpus"].items()
    }


def gpu(name: str) -> GpuSpec:
    catalog = gpu_catalog()
    if name not in catalog:
        raise CatalogError(f"unknown GPU {name!r}; the catalog has: {', '.join(catalog)}")
    return catalog[name]



def node_shape_for(gpu_name: str, cloud: str, tensor_parallel_size: int) -> InstanceShape | None:
    """The shape a GPU pool of `gpu_name` takes when no instance type is named: the fewest GPUs that are a
    multiple of the TP size (every GPU serves a replica), then the cheapest, then the name."""
    fitting = [s for s in gpu(gpu_name).shapes_in(cloud) if s.gpus % tensor_parallel_size == 0]
    ranked = sorted(fitting, key=lambda s: (s.gpus, s.usd_per_hour is None, s.usd_per_hour or 0.0, s.instance))
    return ranked[0] if ranked else None


def instance_shape(cloud: str, instance: str) -> InstanceShape | None:
    """The GPU shape named `instance`, None when the catalog has no GPU shape of that name."""
    return next((s for spec in gpu_catalog().values() for s in spec.shapes_in(cloud) if s.instance == instance), None)
