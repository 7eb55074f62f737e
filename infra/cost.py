"""What the GPU pool costs per hour at its largest, and over an eval stack's TTL.

"At its largest" is the most GPU nodes the stack's pool can run at once, by the cloud's own rules
(max_gpu_nodes), not gpuNodesMax alone: a regional GKE pool starts initial_node_count nodes in *each* of
its zones, whatever its autoscaling total_max_node_count says.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from infra.nodepool import gpu_pool_initial_nodes_per_zone, gpu_pool_zones, node_shape
from infra.config import PROJECT, StackConfig
from infra.catalog import on_demand_price

# A regional GKE cluster's node pools span three zones of the region unless node_locations says otherwise
# (our pools always set it; the policy pack counts a pool without it this way):
# https://cloud.google.com/kubernetes-engine/docs/concepts/regional-clusters ("By default, GKE replicates
# each node pool across three zones of the control plane's region").
GKE_DEFAULT_ZONE_COUNT = 3


@dataclass(frozen=True)
class CostEstimate:
    instance: str | None
    node_usd_per_hour: float | None
    max_nodes: int
    max_usd_per_hour: float | None
    ttl_hours: int | None
    ttl_usd: float | None
    source: str

    def as_dict(self) -> dict:
        return asdict(self)



def describe_cost(cost: dict) -> str:
    """One line for people, from CostEstimate.as_dict() (as exported by the stack)."""
    per_hour = cost.get("max_usd_per_hour")
    text = "unknown" if per_hour is None else f"${per_hour:.2f}/h at {cost['max_nodes']} x {cost['instance'] or 'node'}"
    if cost.get("ttl_usd") is not None:
        text += f", ${cost['ttl_usd']:.2f} over the {cost['ttl_hours']} h TTL"
    return f"{text} ({cost['source']})"


def pool_node_ceiling(cloud: str, max_nodes: int, initial_per_zone: int = 0, zone_count: int = 1) -> int:
    """The most nodes one GPU pool runs at once.

    EKS: a managed node group's scalingConfig.maxSize bounds its Auto Scaling group, desired size included.
    GKE: autoscaling.total_max_node_count bounds what the autoscaler adds, but the pool is created with
    initial_node_count nodes per zone ("In regional or multi-zonal clusters, this is the number of nodes per
    zone", pulumi_gcp 10.2.0 container/node_pool.py, initial_node_count), before the autoscaler acts.
    """
    if cloud == "gcp":
        return max(max_nodes, initial_per_zone * zone_count)
    return max_nodes


def max_gpu_nodes(cfg: StackConfig) -> int:
    """The most GPU nodes the stack's pools can run at once, by its cloud's rules, from the same sizing the
    cluster modules give the pool (infra/nodepool.py: gpu_pool_zones, gpu_pool_initial_nodes_per_zone).
    tests/test_cost_budget.py compares it with the pool the program registers."""
    if cfg.cloud == "gcp":
        return pool_node_ceiling("gcp", cfg.gpu_nodes_max, gpu_pool_initial_nodes_per_zone(cfg),
                                 len(gpu_pool_zones(cfg)))
    return pool_node_ceiling(cfg.cloud, cfg.gpu_nodes_max)


def estimate_cost(cfg: StackConfig) -> CostEstimate:
    shape = node_shape(cfg)
    published = on_demand_price(cfg.cloud, shape.instance, cfg.region) if shape is not None else None
    if cfg.hourly_price_usd is not None:
        price, source = cfg.hourly_price_usd, "hourlyPriceUsd from stack config"
    elif published is not None:
        price, source = published.usd_per_hour, f"catalog {published.describe(cfg.region)}"
    else:
        price, source = None, "no published on-demand price in the catalog: set hourlyPriceUsd"
    nodes = max_gpu_nodes(cfg)
    per_hour = None if price is None else round(price * nodes, 2)
    ttl_usd = None if per_hour is None or cfg.ttl_hours is None else round(per_hour * cfg.ttl_hours, 2)
    return CostEstimate(
        instance=shape.instance if shape else None,
        node_usd_per_hour=price,
        max_nodes=nodes,
        max_usd_per_hour=per_hour,
        ttl_hours=cfg.ttl_hours,
        ttl_usd=ttl_usd,
        source=source,
    )


class BudgetExceeded(Exception):
    """The stack would cost more than its budget allows; the message names the key and the fix."""


def check_budget(cfg: StackConfig, cost: CostEstimate | None = None) -> CostEstimate:
    """The cost estimate, after refusing a stack over maxHourlyUsd, or over maxTotalUsd for its TTL."""
    cost = cost or estimate_cost(cfg)
    budgets = [(cfg.max_hourly_usd, "maxHourlyUsd"), (cfg.max_total_usd, "maxTotalUsd")]
    if any(limit is not None for limit, _ in budgets) and cost.max_usd_per_hour is None:
        raise BudgetExceeded(f"Stack {cfg.stack} has a budget but no known price for its GPU nodes; set "
                             f"`pulumi config set {PROJECT}:hourlyPriceUsd <usd per node hour>`.")
    if cfg.max_hourly_usd is not None and cost.max_usd_per_hour > cfg.max_hourly_usd:
        raise BudgetExceeded(
            f"Stack {cfg.stack} would cost ${cost.max_usd_per_hour:.2f}/h at its largest ({cost.max_nodes} x "
            f"{cost.instance or 'node'} at ${cost.node_usd_per_hour:.2f}/h), over {PROJECT}:maxHourlyUsd "
            f"${cfg.max_hourly_usd:.2f}. Lower {PROJECT}:gpuNodesMax (and gpuNodesMin: a GKE pool starts that many "
            f"per zone), choose a cheaper gpuType, or raise the budget."
        )
    if cfg.max_total_usd is not None:
        if cost.ttl_usd is None:
            raise BudgetExceeded(f"Stack {cfg.stack} sets {PROJECT}:maxTotalUsd but no {PROJECT}:ttlHours to "
                                 "bound its cost; set ttlHours.")
        if cost.ttl_usd > cfg.max_total_usd:
            raise BudgetExceeded(
                f"Stack {cfg.stack} would cost ${cost.ttl_usd:.2f} over its {cost.ttl_hours} h TTL at "
                f"${cost.max_usd_per_hour:.2f}/h, over {PROJECT}:maxTotalUsd ${cfg.max_total_usd:.2f}. Shorten "
                f"{PROJECT}:ttlHours (at most {int(cfg.max_total_usd // cost.max_usd_per_hour)} h) or raise the budget."
            )
    return cost
