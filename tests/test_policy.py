"""The guardrail policies, called directly with resources the real program registers (offline plan),
passing as they are and failing when changed the way a mistake would change them."""

import copy

import pytest

from infra.offline.engine import MASK
from infra.policy.policies import (
    Resource,
    Violations,
    check_all,
    eval_stack_has_ttl,
    gpu_pool_bounded_and_tagged,
    load_balancer_needs_key_and_policy,
    prod_runs_pinned_image_and_model,
    secrets_are_secret,
)
from tests.conftest import STACKS

SECRET = object()  # what a Pulumi secret looks like to these functions in the tests


def unmask(value):
    if value == MASK:
        return SECRET
    if isinstance(value, dict):
        return {k: unmask(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unmask(v) for v in value]
    return value


def resources_of(result):
    return [Resource(r.type, unmask(r.inputs), f"urn:pulumi:{result.stack}::qwen2vl::{r.type}::{r.name}", r.name)
            for r in result.resources if r.custom and not r.read]


def find(resources, type_token, suffix=""):
    return next(r for r in resources if r.type == type_token and r.name.endswith(suffix))


def violations(check, *args):
    found = Violations()
    check(*args, found)
    return found.messages


@pytest.mark.parametrize("stack", [s for s in STACKS if s != "prod"])
def test_committed_stacks_pass(plan_of, stack):
    assert check_all(resources_of(plan_of(stack)), stack, lambda v: v is SECRET) == []


def test_prod_fails_only_because_its_model_lock_is_unresolved(plan_of):
    # The committed lock is unresolved (the hub is out of reach here), so prod serves by short revision.
    messages = check_all(resources_of(plan_of("prod")), "prod", lambda v: v is SECRET)
    assert len(messages) == 1 and "not a full locked commit" in messages[0]


@pytest.mark.parametrize("stack, type_token", [("eval", "aws:eks/nodeGroup:NodeGroup"),
                                                ("staging", "gcp:container/nodePool:NodePool")])
def test_gpu_pool_needs_a_max_size_and_cost_tags(plan_of, stack, type_token):
    pool = find(resources_of(plan_of(stack)), type_token, "-gpu")
    assert violations(gpu_pool_bounded_and_tagged, pool) == []
    unbounded = copy.deepcopy(pool)
    if "scalingConfig" in unbounded.props:
        del unbounded.props["scalingConfig"]["maxSize"]
        del unbounded.props["tags"]["owner"]
    else:
        del unbounded.props["autoscaling"]["totalMaxNodeCount"]
        del unbounded.props["nodeConfig"]["resourceLabels"]["owner"]
    messages = violations(gpu_pool_bounded_and_tagged, unbounded)
    assert any("no maximum size" in m for m in messages) and any("cost tags ['owner']" in m for m in messages)


def test_eval_stack_needs_a_ttl(plan_of):
    resources = resources_of(plan_of("eval"))
    assert violations(eval_stack_has_ttl, resources, "eval") == []
    pool = find(resources, "aws:eks/nodeGroup:NodeGroup", "-gpu")
    del pool.props["tags"]["ttl-hours"]
    assert "has no ttl-hours tag" in violations(eval_stack_has_ttl, resources, "eval")[0]
    assert violations(eval_stack_has_ttl, resources, "staging") == []  # only eval stacks need one


def test_prod_image_must_be_by_digest(plan_of):
    resources = resources_of(plan_of("staging"))
    rayservice = find(resources, "kubernetes:ray.io/v1:RayService")
    assert violations(prod_runs_pinned_image_and_model, [rayservice], "prod")[0].startswith(
        "prod: the model is served by revision")
    worker = rayservice.props["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    worker["image"] = "registry.example.com/qwen2vl-vllm:latest"
    messages = violations(prod_runs_pinned_image_and_model, [rayservice], "prod")
    assert any("not an image by digest" in m for m in messages)


def test_load_balancer_without_policy_and_key_is_refused(plan_of):
    resources = resources_of(plan_of("staging"))
    service = find(resources, "kubernetes:core/v1:Service")
    service.props["spec"]["type"] = "LoadBalancer"
    assert violations(load_balancer_needs_key_and_policy, resources, "staging") == []
    without = [r for r in resources if r.type not in ("kubernetes:networking.k8s.io/v1:NetworkPolicy",
                                                      "kubernetes:core/v1:Secret")]
    message = violations(load_balancer_needs_key_and_policy, without, "staging")[0]
    assert "without a NetworkPolicy and an API key Secret" in message


def test_plain_secret_values_are_refused(plan_of):
    secret = find(resources_of(plan_of("eval")), "kubernetes:core/v1:Secret")
    found = Violations()
    secrets_are_secret(secret, found, lambda v: v is SECRET)
    assert found.messages == []
    secret.props["stringData"] = {"api-key": "typed-into-plain-config"}
    secrets_are_secret(secret, found, lambda v: v is SECRET)
    assert "holds api-key in plain text" in found.messages[0]
