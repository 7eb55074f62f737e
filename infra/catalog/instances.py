"""The instance catalog (instances.yaml): vCPUs, memory, GPUs and pod limits of each machine shape, per cloud."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from infra.catalog.files import CatalogError, catalog_path, load


class UnknownInstance(CatalogError):
    """An instance or machine type the catalog does not describe."""


@dataclass(frozen=True)
class InstanceType:
    cloud: str
    instance: str
    vcpus: int
    memory_gib: float
    gpus: int = 0
    gpu: str | None = None  # a name from gpus.yaml
    accelerator: str | None = None  # gcp: the accelerator type GKE attaches
    max_pods: int | None = None  # aws: the EKS AMI's maxPods; None = the cloud's default
    # CPU credits: a steady load above the baseline (the Ray head's GCS and Serve controller) is throttled.
    burstable: bool = False


@lru_cache(maxsize=None)
def instance_types(cloud: str) -> dict[str, InstanceType]:
    return {name: InstanceType(cloud=cloud, instance=name, **entry)
            for name, entry in (load("instances").get(cloud) or {}).items()}


def known_instances(cloud: str) -> list[str]:
    return list(instance_types(cloud))


def instance_type(cloud: str, instance: str) -> InstanceType:
    found = instance_types(cloud).get(instance)
    if found is None:
        raise UnknownInstance(f"{instance} is not in {catalog_path('instances')} for {cloud}")
    return found


def gpu_instances(cloud: str, gpu: str | None = None) -> list[InstanceType]:
    """The cloud's GPU shapes (of one GPU model), fewest GPUs first."""
    shapes = [s for s in instance_types(cloud).values() if s.gpus and (gpu is None or s.gpu == gpu)]
    return sorted(shapes, key=lambda s: (s.gpus, s.vcpus, s.memory_gib, s.instance))
