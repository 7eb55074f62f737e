"""The budget counts the GPU nodes the stack's pools can really run at once (max_gpu_nodes), checked
against the pools the program registers."""

import pytest

from infra.cost import BudgetExceeded, check_budget, estimate_cost, max_gpu_nodes, pool_node_ceiling
from infra.offline.engine import read_stack_config, run_plan
from tests.conftest import REPO_ROOT, make_config, write_stack

GCP = {"cloud": "gcp", "gcpProject": "my-gpu-project", "region": "us-central1", "gpuType": "A100-80GB"}


def test_a_regional_gke_pool_starts_its_initial_count_in_every_zone():
    # initial_node_count 1 in GKE's default three zones: three nodes at create, though autoscaling stops at 2.
    assert pool_node_ceiling("gcp", max_nodes=2, initial_per_zone=1, zone_count=3) == 3
    assert pool_node_ceiling("gcp", max_nodes=2, initial_per_zone=0, zone_count=3) == 2
    assert pool_node_ceiling("aws", max_nodes=2) == 2


@pytest.mark.parametrize("zones, low, high", [(["us-central1-a", "us-central1-b", "us-central1-c"], 3, 4),
                                              (["us-central1-a"], 1, 2)])
def test_the_stack_budget_follows_the_pool_sizing(zones, low, high):
    """gpuNodesMin 3 in three zones starts one node per zone; in one zone, three: never above gpuNodesMax."""
    cfg = make_config(**GCP, gpuNodesMin=low, gpuNodesMax=high, zones=zones)
    assert max_gpu_nodes(cfg) == estimate_cost(cfg).max_nodes == high


def test_eks_node_group_is_bounded_by_its_max_size():
    cfg = make_config(cloud="aws", region="us-east-1", gpuType="L4", gpuNodesMin=1, gpuNodesMax=2)
    assert max_gpu_nodes(cfg) == 2


def test_budget_refuses_what_the_pool_can_run():
    node_price = estimate_cost(make_config(**GCP, gpuNodesMin=0, gpuNodesMax=1)).node_usd_per_hour
    budget = round(node_price * 2 + 1, 2)
    check_budget(make_config(**GCP, gpuNodesMin=0, gpuNodesMax=2, maxHourlyUsd=budget))
    with pytest.raises(BudgetExceeded, match=r"at its largest \(3 x a2-ultragpu-4g"):
        check_budget(make_config(**GCP, gpuNodesMin=0, gpuNodesMax=3, maxHourlyUsd=budget))


def _registered_pool_ceiling(plan) -> int:
    """The most nodes the GPU pool the program registered runs at once, from its recorded inputs."""
    pool = next(r for r in plan.resources if r.type in ("gcp:container/nodePool:NodePool", "aws:eks/nodeGroup:NodeGroup")
                and r.name.endswith("-gpu"))
    if pool.type == "gcp:container/nodePool:NodePool":
        zones = pool.inputs.get("nodeLocations") or []
        return pool_node_ceiling("gcp", pool.inputs["autoscaling"]["totalMaxNodeCount"],
                                 pool.inputs.get("initialNodeCount", 0), len(zones) or 3)
    return pool_node_ceiling("aws", pool.inputs["scalingConfig"]["maxSize"])


@pytest.mark.parametrize("stack", ["eval", "staging", "prod"])
def test_budget_covers_the_pool_the_program_registers(plan_of, stack):
    plan = plan_of(stack)
    assert estimate_cost(read_stack_config(stack)).max_nodes == _registered_pool_ceiling(plan)


def test_plan_says_plainly_that_a_plain_up_of_eval_is_never_reaped(plan_of, tmp_path):
    """Only scripts/eval.py writes the stack tag the reaper reads; the plan and `up` of the eval stack say so."""
    import yaml

    from infra.evaluation.reaping import TTL_TAG

    assert any("Stack 'eval' is never reaped" in w and TTL_TAG in w for w in plan_of("eval").warnings)
    config = yaml.safe_load((REPO_ROOT / "Pulumi.eval.yaml").read_text())["config"]
    made_by_eval = run_plan("eval-20261126-120000-abc123",
                            write_stack(tmp_path, "eval-20261126-120000-abc123", config))
    assert made_by_eval.ok and not any(TTL_TAG in w for w in made_by_eval.warnings)
    assert not any(TTL_TAG in w for w in plan_of("prod").warnings)  # no ttlHours, no promise
