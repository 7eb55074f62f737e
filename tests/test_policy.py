"""The policy pack as the Pulumi engine runs it: its own process, called over gRPC (Analyze per resource,
AnalyzeStack at the end) with the resources the real program registers, marshalled the engine's way, in
preview (unknowns where a new stack has them) and in update (tests/policy_engine.py says how)."""

import copy
from functools import cache

import pytest

from infra.offline.engine import MASK, run_plan
from infra.policy.policies import MAX_GPU_NODES, RESOURCE_POLICIES, STACK_POLICIES
from tests.conftest import write_stack
from tests.policy_engine import ADVISORY, MANDATORY, SECRET_SIG, UNKNOWN, PolicyPackProcess, registered

NODE_GROUP, NODE_POOL = "aws:eks/nodeGroup:NodeGroup", "gcp:container/nodePool:NodePool"


@cache
def wire(stack, preview):
    return tuple(registered(stack, preview))


def resource(stack, preview, type_token, suffix=""):
    found = next(r for r in wire(stack, preview) if r.type == type_token and r.name.endswith(suffix))
    return copy.deepcopy(found)


def summary(diagnostics):
    return [(d.policyName, d.enforcementLevel, d.message) for d in diagnostics]


def test_the_pack_serves_the_guardrails_as_mandatory():
    with PolicyPackProcess("eval", preview=True) as pack:
        info = pack.info()
    assert {p.name: p.enforcementLevel for p in info.policies} == {
        name: MANDATORY for name in [*RESOURCE_POLICIES, *STACK_POLICIES]}


@pytest.mark.parametrize("stack", ["eval", "prod"])
@pytest.mark.parametrize("preview", [True, False], ids=["preview", "update"])
def test_every_policy_runs_on_the_committed_stacks(stack, preview):
    """No check is skipped as "can't run during preview", and nothing but prod's unresolved model lock
    is reported (the committed lock cannot be resolved here: the hub is out of reach)."""
    with PolicyPackProcess(stack, preview) as pack:
        found = [(r.name, *d) for r in wire(stack, preview) for d in summary(pack.analyze(r))]
        found += [("stack", *d) for d in summary(pack.analyze_stack(list(wire(stack, preview))))]
    skipped = [f for f in found if f[2] == ADVISORY]
    if stack == "prod" and preview:  # the image digest exists only once the image is built
        assert [f[0] for f in skipped] == ["rayservice-qwen2vl"] and ".image can't be known" in skipped[0][3]
    else:
        assert skipped == []
    mandatory = [f for f in found if f[2] == MANDATORY]
    if stack == "prod":
        assert [(f[0], f[1]) for f in mandatory] == [("rayservice-qwen2vl", "prod-runs-pinned-image-and-model")]
        assert "not a full locked commit" in mandatory[0][3]
    else:
        assert mandatory == []


@pytest.mark.parametrize("stack, type_token, cluster_input", [("eval", NODE_GROUP, "clusterName"),
                                                              ("prod", NODE_POOL, "cluster")])
def test_a_gpu_pool_beyond_its_bounds_is_stopped_in_preview(stack, type_token, cluster_input):
    pool = resource(stack, True, type_token, "-gpu")
    assert pool.properties[cluster_input] == UNKNOWN  # what a preview of a new stack has
    if type_token == NODE_GROUP:
        pool.properties["scalingConfig"]["maxSize"] = nodes = MAX_GPU_NODES + 24
        del pool.properties["tags"]["owner"]
    else:
        # 9 in each zone at create, whatever the autoscaling maximum says (GKE's default is three zones).
        pool.properties["initialNodeCount"] = 9
        nodes = 9 * (len(pool.properties.get("nodeLocations") or []) or 3)
        del pool.properties["nodeConfig"]["resourceLabels"]["owner"]
    with PolicyPackProcess(stack, preview=True) as pack:
        found = summary(pack.analyze(pool))
    assert all(level == MANDATORY for _, level, _ in found) and {name for name, _, _ in found} == {
        "gpu-pool-bounded-and-tagged"}
    assert nodes > MAX_GPU_NODES and any(f"can run {nodes} nodes" in m for _, _, m in found)
    assert any("lacks cost tags ['owner']" in m for _, _, m in found)


def test_an_eval_pool_without_its_ttl_is_stopped_in_preview():
    pool = resource("eval", True, NODE_GROUP, "-gpu")
    del pool.properties["tags"]["ttl-hours"]
    with PolicyPackProcess("eval", preview=True) as pack:
        found = summary(pack.analyze(pool))
    assert [(name, level) for name, level, _ in found] == [("eval-pool-has-ttl", MANDATORY)]


def test_prod_image_is_checked_on_the_rayservice_before_it_is_created():
    rayservice = resource("prod", False, "kubernetes:ray.io/v1:RayService")
    worker = rayservice.properties["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert "@sha256:" in worker["image"]
    worker["image"] = "registry.example.com/qwen2vl-vllm:latest"
    with PolicyPackProcess("prod", preview=False) as pack:
        found = summary(pack.analyze(rayservice))
    assert any(level == MANDATORY and "runs 'registry.example.com/qwen2vl-vllm:latest', not an image by digest" in m
               for _, level, m in found)


@pytest.mark.parametrize("preview", [True, False], ids=["preview", "update"])
def test_a_real_secret_is_never_rejected(preview):
    secret = resource("eval", preview, "kubernetes:core/v1:Secret", "api-key")
    data = secret.properties["stringData"]
    assert {k: data[k] for k in SECRET_SIG} == SECRET_SIG  # a secret: the generated key, unknown until created
    assert data["value"] == UNKNOWN if preview else data["value"]["api-key"]
    with PolicyPackProcess("eval", preview) as pack:
        assert summary(pack.analyze(secret)) == []


def test_the_program_makes_the_api_key_secret_even_from_plain_config(tmp_path):
    """Where the plain-secret check lives now: the value the program sends is a secret Output whatever the
    config was (stringData is recorded as a secret)."""
    config = {"qwen2vl:cloud": "existing", "qwen2vl:registry": "registry.example.com/ml",
              "qwen2vl:apiKey": "typed-into-plain-config"}
    plan = run_plan("plain", write_stack(tmp_path, "plain", config))
    assert plan.ok, plan.error
    secret = next(r for r in plan.resources if r.type == "kubernetes:core/v1:Secret" and r.name.endswith("api-key"))
    assert secret.inputs["stringData"] == MASK


def test_a_load_balancer_needs_a_network_policy_and_the_api_key():
    resources = [copy.deepcopy(r) for r in wire("eval", False)]
    rayservice = next(r for r in resources if r.type == "kubernetes:ray.io/v1:RayService")
    rayservice.properties["spec"]["serveService"]["spec"]["type"] = "LoadBalancer"  # the endpoint, made public
    without = [r for r in resources if r.type not in ("kubernetes:networking.k8s.io/v1:NetworkPolicy",
                                                      "kubernetes:core/v1:Secret")]
    with PolicyPackProcess("eval", preview=False) as pack:
        assert summary(pack.analyze_stack(resources)) == []
        found = summary(pack.analyze_stack(without))
    assert [(name, level) for name, level, _ in found] == [("load-balancer-needs-key-and-policy", MANDATORY)]
    assert "rayservice-qwen2vl exposes a LoadBalancer" in found[0][2]
    assert "without a NetworkPolicy and an API key Secret" in found[0][2]
