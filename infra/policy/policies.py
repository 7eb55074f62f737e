"""Guardrails as plain functions over the resources a stack registers (type, properties, URN).

`infra/policy/__main__.py` wraps them in a Pulumi PolicyPack (`pulumi preview --policy-pack infra/policy`);
the tests call them directly with resources the real program registers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import yaml

from infra.nodepool import GPU_POOL_LABEL

MAX_GPU_NODES = 16
COST_TAGS = ("owner", "cost-center")
FULL_COMMIT = re.compile(r"^[0-9a-f]{40}$")
Report = Callable[[str], None]


@dataclass(frozen=True)
class Resource:
    type: str
    props: dict
    urn: str = ""
    name: str = ""

    @property
    def stack(self) -> str:
        return self.urn.split("::")[0].removeprefix("urn:pulumi:") if self.urn else ""


@dataclass
class Violations:
    messages: list[str] = field(default_factory=list)

    def __call__(self, message: str) -> None:
        self.messages.append(message)


def _gpu_pool(resource: Resource) -> tuple[int | None, dict] | None:
    """(max nodes, cost tags/labels) of a GPU node pool, or None for anything else."""
    props = resource.props
    if resource.type == "aws:eks/nodeGroup:NodeGroup" and GPU_POOL_LABEL in (props.get("labels") or {}):
        return (props.get("scalingConfig") or {}).get("maxSize"), props.get("tags") or {}
    if resource.type == "gcp:container/nodePool:NodePool" and (props.get("nodeConfig") or {}).get("guestAccelerators"):
        return ((props.get("autoscaling") or {}).get("totalMaxNodeCount"),
                (props.get("nodeConfig") or {}).get("resourceLabels") or {})
    return None


def gpu_pool_bounded_and_tagged(resource: Resource, report: Report) -> None:
    pool = _gpu_pool(resource)
    if pool is None:
        return
    max_nodes, tags = pool
    if max_nodes is None or max_nodes > MAX_GPU_NODES:
        report(f"GPU node pool {resource.name} has no maximum size at or below {MAX_GPU_NODES} (got {max_nodes}); "
               "set qwen2vl:gpuNodesMax")
    missing = [tag for tag in COST_TAGS if not tags.get(tag)]
    if missing:
        report(f"GPU node pool {resource.name} lacks cost tags {missing}; set qwen2vl:owner and qwen2vl:costCenter")


def eval_stack_has_ttl(resources: Iterable[Resource], stack: str, report: Report) -> None:
    if not stack.startswith("eval"):
        return
    for resource in resources:
        pool = _gpu_pool(resource)
        if pool is not None and not pool[1].get("ttl-hours"):
            report(f"eval stack {stack}: GPU node pool {resource.name} has no ttl-hours tag; set qwen2vl:ttlHours")


def _serve_args(rayservice: Resource) -> list[dict]:
    serve = yaml.safe_load(rayservice.props.get("spec", {}).get("serveConfigV2") or "{}") or {}
    return [app.get("args", {}) for app in serve.get("applications", [])]


def _containers(rayservice: Resource) -> list[dict]:
    cluster = rayservice.props.get("spec", {}).get("rayClusterConfig", {})
    groups = [cluster.get("headGroupSpec", {}), *cluster.get("workerGroupSpecs", [])]
    return [c for g in groups for key in ("containers", "initContainers")
            for c in g.get("template", {}).get("spec", {}).get(key, [])]


def prod_runs_pinned_image_and_model(resources: Iterable[Resource], stack: str, report: Report) -> None:
    if not stack.startswith("prod"):
        return
    for resource in resources:
        if resource.type != "kubernetes:ray.io/v1:RayService":
            continue
        for container in _containers(resource):
            if "@sha256:" not in str(container.get("image", "")):
                report(f"prod: container {container.get('name')} runs {container.get('image')!r}, not an image by "
                       "digest; let the stack build the image or set qwen2vl:image to name@sha256:...")
        for args in _serve_args(resource):
            revision = args.get("revision")
            if revision is not None and not FULL_COMMIT.match(str(revision)):
                report(f"prod: the model is served by revision {revision!r}, not a full locked commit; resolve it "
                       "with scripts/lock_model.py and commit infra/model.lock.json")


def load_balancer_needs_key_and_policy(resources: Iterable[Resource], stack: str, report: Report) -> None:
    resources = list(resources)

    def namespace(resource: Resource) -> str:
        return resource.props.get("metadata", {}).get("namespace", "default")

    policies = {namespace(r) for r in resources if r.type == "kubernetes:networking.k8s.io/v1:NetworkPolicy"}
    keys = {namespace(r) for r in resources if r.type == "kubernetes:core/v1:Secret"
            and r.props.get("metadata", {}).get("name", "").endswith("-api-key")}
    for resource in resources:
        if resource.type == "kubernetes:core/v1:Service" and resource.props.get("spec", {}).get("type") == "LoadBalancer":
            ns = namespace(resource)
            if ns not in policies or ns not in keys:
                report(f"Service {resource.name} is a LoadBalancer in namespace {ns} without "
                       + " and ".join(w for w, ok in (("a NetworkPolicy", ns in policies),
                                                        ("an API key Secret", ns in keys)) if not ok))


def secrets_are_secret(resource: Resource, report: Report, is_secret: Callable[[Any], bool]) -> None:
    """Kubernetes Secret values must come from Pulumi secrets (`pulumi config set --secret`), not plain config."""
    if resource.type != "kubernetes:core/v1:Secret":
        return
    data = resource.props.get("stringData")
    if data is None or is_secret(data):  # the program marks the whole of stringData secret
        return
    for key, value in data.items():
        if not is_secret(value):
            report(f"Secret {resource.name} holds {key} in plain text; set it with `pulumi config set --secret`")


RESOURCE_POLICIES = {"gpu-pool-bounded-and-tagged": gpu_pool_bounded_and_tagged}
STACK_POLICIES = {
    "eval-stack-has-ttl": eval_stack_has_ttl,
    "prod-runs-pinned-image-and-model": prod_runs_pinned_image_and_model,
    "load-balancer-needs-key-and-policy": load_balancer_needs_key_and_policy,
}


def check_all(resources: list[Resource], stack: str, is_secret: Callable[[Any], bool]) -> list[str]:
    """Every violation in a stack, as the policy pack would report them."""
    violations = Violations()
    for resource in resources:
        for policy in RESOURCE_POLICIES.values():
            policy(resource, violations)
        secrets_are_secret(resource, violations, is_secret)
    for policy in STACK_POLICIES.values():
        policy(resources, stack, violations)
    return violations.messages

