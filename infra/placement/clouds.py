"""Node pools as the clouds build them: capacity from the instance catalog (infra/catalog/instances.yaml),
allocatable by each cloud's reservation formula, and what the cloud itself runs and offers (clouds.yaml).

EKS (AL2023, nodeadm; awslabs/amazon-eks-ami nodeadm/internal/kubelet/config.go at 81fec2e8):
- kube-reserved CPU: 6% of the first core, 1% of the second, 0.5% of the third and fourth, 0.25% of
  the rest, in integer millicores per range (getCPUMillicoresToReserve, getResourceToReserveInRange);
- kube-reserved memory: 11 MiB x maxPods + 255 MiB (getMemoryMebibytesToReserve), with maxPods =
  ENIs x (IPv4 per ENI - 1) + 2 (eni_max_pods.go calculateStandardMaxPods);
- evictionHard memory.available 100Mi (defaultKubeletSubConfig); no system-reserved.
- Memory capacity is what the guest kernel reports, below the instance's nominal memory; we take
  Karpenter's default estimate of that loss, VM_MEMORY_OVERHEAD_PERCENT = 0.075
  (https://karpenter.sh/docs/reference/settings/), which is on the safe side of observed nodes.
GKE (https://cloud.google.com/kubernetes-engine/docs/concepts/plan-node-sizes, "Node allocatable";
the same brackets as kubernetes/autoscaler cluster-autoscaler/cloudprovider/gce/reserved.go):
- CPU: the same brackets as EKS (6% / 1% / 0.5% / 0.25%);
- memory: 255 MiB below 1 GB, else 25% of the first 4 GB, 20% of the next 4, 10% of the next 8,
  6% of the next 112, 2% above 128 (GB counted as 1000 MiB, as GKE does); eviction 100 MiB;
- capacity: physical memory minus the kernel's reservation, 1/64 + 16 MiB (+ 64 MiB swiotlb above
  3 GiB) (reserved.go CalculateKernelReserved), less GKE_CAPACITY_MARGIN: published nodes report 24 to
  66 MiB less than that estimate (tests/test_placement.py), and the check must not see more than a node has.
Both reservation rules reproduce measured nodes to the MiB (2i2c-org/infrastructure
deployer/commands/generate/resource_allocation/node-capacity-info.json: r5.xlarge, r5.4xlarge on EKS;
n2-highmem-4, n2-highmem-32, n1-highmem-4 on GKE), see the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from infra.catalog.files import FAST_LOADER
from infra.catalog.instances import instance_type
from infra.placement.quantity import CPU, MEMORY
from infra.placement.scheduler import PODS

_HERE = Path(__file__).parent
MIB = 2**20
GIB = 2**30
GPU_RESOURCE = "nvidia.com/gpu"
EVICTION_HARD_MEMORY = 100 * MIB
AWS_VM_MEMORY_OVERHEAD = 0.075
GKE_CAPACITY_MARGIN = 80 * MIB
CPU_BRACKETS = ((0, 600), (1000, 100), (2000, 50), (4000, 25))  # (from millicores, rate in 1/10000)
GKE_MEMORY_BRACKETS = ((0, 0.25), (4000, 0.20), (8000, 0.10), (16000, 0.06), (128000, 0.02))  # MiB


@dataclass(frozen=True)
class MachineShape:
    cloud: str
    instance: str
    vcpus: int
    memory_gib: float
    gpus: int
    accelerator: str | None
    max_pods: int


@lru_cache(maxsize=1)
def cloud_facts() -> dict:
    return yaml.load((_HERE / "clouds.yaml").read_text(), Loader=FAST_LOADER)


def machine(cloud: str, instance: str) -> MachineShape:
    shape = instance_type(cloud, instance)
    max_pods = shape.max_pods if shape.max_pods is not None else cloud_facts()[cloud]["max_pods_default"]
    return MachineShape(cloud, instance, shape.vcpus, float(shape.memory_gib), shape.gpus, shape.accelerator, max_pods)


def reserved_cpu_millicores(vcpus: int) -> int:
    total = vcpus * 1000
    reserved = 0
    for index, (start, rate) in enumerate(CPU_BRACKETS):
        end = CPU_BRACKETS[index + 1][0] if index + 1 < len(CPU_BRACKETS) else total
        if total > start:
            reserved += (min(total, end) - start) * rate // 10000
    return reserved


def gke_reserved_memory_mib(memory_mib: int) -> int:
    if memory_mib <= 1000:
        return 255
    reserved = 0.0
    for index, (start, rate) in enumerate(GKE_MEMORY_BRACKETS):
        end = GKE_MEMORY_BRACKETS[index + 1][0] if index + 1 < len(GKE_MEMORY_BRACKETS) else memory_mib
        if memory_mib > start:
            reserved += (min(memory_mib, end) - start) * rate
    return int(reserved)


def gke_kernel_reserved(memory_bytes: int) -> int:
    return memory_bytes // 64 + 16 * MIB + (64 * MIB if memory_bytes > 3 * GIB else 0)


def capacity(shape: MachineShape) -> dict[str, int]:
    physical = int(shape.memory_gib * GIB)
    if shape.cloud == "aws":
        memory = int(physical * (1 - AWS_VM_MEMORY_OVERHEAD))
    else:
        memory = physical - gke_kernel_reserved(physical) - GKE_CAPACITY_MARGIN
    return {CPU: shape.vcpus * 1000, MEMORY: memory, PODS: shape.max_pods}


def allocatable(shape: MachineShape, gpu_advertised: bool) -> dict[str, int]:
    """The node's allocatable as the kubelet reports it (GPUs only where a device plugin runs)."""
    cap = capacity(shape)
    if shape.cloud == "aws":
        reserved_memory = (11 * shape.max_pods + 255) * MIB
    else:
        reserved_memory = gke_reserved_memory_mib(int(shape.memory_gib * 1024)) * MIB
    result = {
        CPU: cap[CPU] - reserved_cpu_millicores(shape.vcpus),
        MEMORY: cap[MEMORY] - reserved_memory - EVICTION_HARD_MEMORY,
        PODS: cap[PODS],
    }
    if shape.gpus and gpu_advertised:
        result[GPU_RESOURCE] = shape.gpus
    return result
