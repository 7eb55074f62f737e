"""The GPU catalog (gpus.yaml): memory, compute capability and the instance shapes that carry each GPU."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from infra.catalog.files import CatalogError, load


@dataclass(frozen=True)
class InstanceShape:
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


def _gpu_data() -> dict[str, Any]:
    return load("gpus")


@lru_cache(maxsize=1)
def gpu_catalog() -> dict[str, GpuSpec]:
    return {
        name: GpuSpec(
            name=name,
            memory_gib=float(entry["memory_gib"]),
            compute_capability=_capability(entry["compute_capability"]),
            shapes=tuple(InstanceShape(**shape) for shape in entry["shapes"]),
        )
        for name, entry in _gpu_data()["gpus"].items()
    }


def prices_as_of() -> str:
    return str(_gpu_data()["prices_as_of"])


def gpu(name: str) -> GpuSpec:
    catalog = gpu_catalog()
    if name not in catalog:
        raise CatalogError(f"unknown GPU {name!r}; the catalog has: {', '.join(catalog)}")
    return catalog[name]
