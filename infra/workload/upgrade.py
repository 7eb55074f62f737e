"""How a cluster-level change (a new image, env, resources, probes) reaches the GPUs under KubeRay 1.4,
chosen per stack from its GPU capacity, and what it costs.

KubeRay 1.4.2 hashes `rayClusterConfig` without replicas/minReplicas/maxReplicas/workersToDelete
(ray-operator/controllers/ray/rayservice_controller.go:1098-1111). A change of that hash either
- NewCluster: creates a second, pending RayCluster, moves the serve Service to it once every Serve app
  there is RUNNING (:880-883, :166-187, common/service.go:198-203) and deletes the old one 60 s later
  (:41, :550-590); it needs the GPUs of a second cluster and never gives up waiting for them; or
- None: does nothing at all ("No new cluster will be created while the strategy is set to None",
  apis/ray/v1/rayservice_types.go:27; shouldPrepareNewCluster :689-711 and shouldUpdateCluster :631-657
  both answer no), so the program itself deletes and recreates the RayService (component.py).
The default is NewCluster when the field is unset (:468-493), which is why every stack sets it.

Every modelStorage choice keeps one model copy per worker (or a ReadWriteMany volume), so storage
never stops a second cluster from starting; the GPU pool's size decides.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.config import StackConfig
from infra.cost import estimate_cost
from infra.nodepool import replicas_per_node
from infra.preflight.memory import weights_per_gpu_bytes
from infra.preflight.model import parse_model_config
from infra.preflight_gate import preflight_request

NEW_CLUSTER = "NewCluster"
RECREATE = "None"
# The RayService carries image_change_cost() here (kubectl describe; the plan prints it).
IMAGE_CHANGE_ANNOTATION = "qwen2vl.io/image-change"

# Estimates, not measurements (nothing here ran on a GPU node); each is a round figure for the clouds
# the stacks use, so the plan can say "about". docs/operations.md lists them.
GPU_NODE_START_S = 360  # VM boot, GPU driver installation (GKE) or AMI start (EKS), device plugin
IMAGE_BYTES = 15e9  # the serving image without the model (infra/nodepool.py sizes node disks for it)
PULL_BYTES_PER_S = 100e6  # registry pull plus layer unpacking, which is single-threaded per layer
HUB_BYTES_PER_S = 200e6  # the model hub (or mirror) into the pod's volume
LOAD_BYTES_PER_S = 150e6  # safetensors from a cloud block or file volume into GPU memory
WARMUP_S = 180  # Ray worker start, vLLM's memory profiling and CUDA graph capture


@dataclass(frozen=True)
class UpgradePlan:
    """What a cluster-level change does on one stack, and what its availability costs."""

    stack: str
    strategy: str  # spec.upgradeStrategy.type
    serving_nodes: int  # GPU nodes one cluster holds while it serves (its floor)
    pool_max_nodes: int
    extra_gpus: int  # GPUs a second cluster holds during the upgrade (0 without one)
    minutes: int  # until the new cluster serves: the upgrade's length, or the outage under None
    rest_nodes: int  # GPU nodes at rest: gpuNodesMin
    rest_replicas: int  # Serve replicas on them
    serve_max: int  # Serve's most replicas (serve_max_replicas)
    node_usd_per_hour: float | None  # one GPU node, from the cost estimate

    @property
    def zero_downtime(self) -> bool:
        return self.strategy == NEW_CLUSTER

    def _availability(self) -> str:
        price = self.node_usd_per_hour
        rest = f"{self.rest_replicas} replica(s) on {self.rest_nodes} node(s) at rest" + (
            f" (${self.rest_nodes * price:.2f}/h" + (f", ${(self.rest_nodes - 1) * price:.2f}/h of it for "
                                                      "surviving a node event without an outage)"
                                                      if self.rest_nodes > 1 else ")")
            if price is not None else "")
        return f"Serve runs {rest}, at most {self.serve_max}"

    def statement(self) -> str:
        """One line for the plan and the docs: what an image change costs on this stack."""
        if self.zero_downtime:
            return (f"{self.stack}: an image change is zero-downtime (upgradeStrategy NewCluster): a second "
                    f"RayCluster holds {self.extra_gpus} more GPUs for about {self.minutes} minutes, then the "
                    f"endpoint moves to it and the old cluster is deleted 60 s later. {self._availability()}, so "
                    f"the pool's {self.pool_max_nodes} nodes keep room for the second cluster even at Serve's "
                    f"maximum; if the cloud cannot supply those nodes (stockout, quota) the upgrade waits and the "
                    f"old cluster keeps serving")
        return (f"{self.stack}: an image change means downtime of about {self.minutes} minutes (upgradeStrategy "
                f"None: the program deletes and recreates the RayService, since the GPU pool's "
                f"{self.pool_max_nodes} node(s) cannot hold a second cluster of {self.serving_nodes}). "
                f"{self._availability()}")


def serving_nodes(cfg: StackConfig) -> int:
    """GPU nodes a cluster holds while it serves: its floor, and at least one replica's node (a new
    cluster starts with one replica even on a scale-to-zero stack, serve_config.initial_replicas)."""
    return max(1, cfg.gpu_nodes_min)


def ready_seconds(cfg: StackConfig, model_bytes: float, new_node: bool) -> float:
    """About how long a new worker takes until its replica serves: node, image, model, load, warm-up."""
    pulled = IMAGE_BYTES + (model_bytes if cfg.model_storage == "image" else 0.0)
    # readWriteMany: the shared volume already holds the files; ephemeral: every new pod fetches them.
    fetched = model_bytes if cfg.model_storage == "ephemeral" else 0.0
    return ((GPU_NODE_START_S if new_node else 0.0) + pulled / PULL_BYTES_PER_S + fetched / HUB_BYTES_PER_S
            + model_bytes / LOAD_BYTES_PER_S + WARMUP_S)


def serve_max_replicas(cfg: StackConfig) -> int:
    """Serve's most replicas (replicas_per_node on each GPU node). Under NewCluster the pool keeps room
    for an upgrade's second cluster at its initial replicas (serving_nodes) beside the active one at this
    maximum, so an upgrade never waits for load to fall (KubeRay 1.4.2 never gives up on a pending
    cluster); under None the old cluster goes first, so Serve may use the whole pool."""
    nodes = cfg.gpu_nodes_max - serving_nodes(cfg) if upgrade_strategy(cfg) == NEW_CLUSTER else cfg.gpu_nodes_max
    return nodes * replicas_per_node(cfg)


def upgrade_strategy(cfg: StackConfig) -> str:
    """NewCluster when the GPU pool can hold a second cluster at its floor next to the active one at
    its floor; otherwise None. Serve's maximum then leaves that room free (serve_max_replicas)."""
    return NEW_CLUSTER if cfg.gpu_nodes_max >= 2 * serving_nodes(cfg) else RECREATE


def model_bytes(cfg: StackConfig) -> float:
    """Size of the weights (the preflight's count, which is what the checkpoint's files hold)."""
    dims = parse_model_config(preflight_request(cfg).model_config)
    return weights_per_gpu_bytes(dims, cfg.tensor_parallel_size) * cfg.tensor_parallel_size


def upgrade_plan(cfg: StackConfig, weights_bytes: float | None = None) -> UpgradePlan:
    """The strategy and its cost. Under None the recreated worker lands on the node the old one leaves
    (no new node); under NewCluster the second cluster's workers need nodes of their own."""
    strategy = upgrade_strategy(cfg)
    floor = serving_nodes(cfg)
    second_cluster = strategy == NEW_CLUSTER
    size = model_bytes(cfg) if weights_bytes is None else weights_bytes
    return UpgradePlan(
        stack=cfg.stack,
        strategy=strategy,
        serving_nodes=floor,
        pool_max_nodes=cfg.gpu_nodes_max,
        # The second cluster starts its Serve floor of replicas (at least one), TP GPUs each.
        extra_gpus=max(1, cfg.gpu_nodes_min * replicas_per_node(cfg)) * cfg.tensor_parallel_size if second_cluster else 0,
        minutes=round(ready_seconds(cfg, size, new_node=second_cluster) / 60),
        rest_nodes=cfg.gpu_nodes_min,
        rest_replicas=cfg.gpu_nodes_min * replicas_per_node(cfg),
        serve_max=serve_max_replicas(cfg),
        node_usd_per_hour=estimate_cost(cfg).node_usd_per_hour,
    )


def image_change_cost(cfg: StackConfig) -> str:
    """What an image change costs on this stack, in one sentence (the plan prints it)."""
    return upgrade_plan(cfg).statement()
