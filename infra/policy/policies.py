"""Guardrails as plain functions over the resources a stack registers (type, properties, URN).

`infra/policy/__main__.py` serves them as a Pulumi policy pack (`pulumi preview --policy-pack infra/policy`).
How the engine calls a pack decides what each check can stop (docs/policy.md):
- Resource policies run on a resource's inputs before the engine acts on it, in preview and in update
  (pkg/resource/deploy/step_generator.go, pulumi v3.259.0, lines 1401-1473: a MANDATORY violation makes the
  resource invalid before its step runs). So every check that must prevent something is a resource policy.
- During preview, inputs built from what other resources will compute are unknown. The pack hands them to
  us inside a proxy that raises UnknownValueError when one is read (pulumi_policy 1.21 proxy.py), and a
  check that raises is reported as ADVISORY "can't run during preview" (policy.py lines 1012-1021). So the
  checks read only the fields they need, through `field`, and never copy the whole property map.
- Secret inputs reach the pack as plain values (policy.py lines 997, 1049 deserialize with the default proxy_secrets=False), so
  no check can tell a secret from plain text; the program makes Secret data secret itself
  (infra/workload/component.py wraps every value in pulumi.Output.secret).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Callable

import yaml

from infra.cost import GKE_DEFAULT_ZONE_COUNT, pool_node_ceiling
from infra.nodepool import GPU_POOL_LABEL

MAX_GPU_NODES = 16
COST_TAGS = ("owner", "cost-center")
TTL_TAG = "ttl-hours"
FULL_COMMIT = re.compile(r"^[0-9a-f]{40}$")
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
NODE_POOL = "gcp:container/nodePool:NodePool"
RAY_SERVICE = "kubernetes:ray.io/v1:RayService"
Report = Callable[[str], None]


@dataclass(frozen=True)
class Resource:
    type: str
    props: Mapping  # the pack's unknown-checking proxy, or a plain dict
    urn: str = ""
    name: str = ""

    @property
    def stack(self) -> str:
        return self.urn.split("::")[0].removeprefix("urn:pulumi:") if self.urn else ""


def field(props: Any, *path: str, default: Any = None) -> Any:
    """The value at `path`, reading only the keys on the way (each read of an unknown raises in preview)."""
    value = props
    for key in path:
        if not isinstance(value, Mapping) or key not in value or value[key] is None:
            return default
        value = value[key]
    return value


@dataclass(frozen=True)
class GpuPool:
    nodes_at_most: int | None  # None when the pool sets no maximum
    tags: Mapping


def gpu_pool(resource: Resource) -> GpuPool | None:
    """The GPU node pool's ceiling (what the cloud may run at once) and cost tags; None for anything else."""
    props = resource.props
    if resource.type == NODE_GROUP and GPU_POOL_LABEL in field(props, "labels", default={}):
        max_size = field(props, "scalingConfig", "maxSize")
        return GpuPool(None if max_size is None else pool_node_ceiling("aws", int(max_size)),
                       field(props, "tags", default={}))
    if resource.type == NODE_POOL and field(props, "nodeConfig", "guestAccelerators", default=[]):
        total_max = field(props, "autoscaling", "totalMaxNodeCount")
        zones = len(field(props, "nodeLocations", default=[])) or GKE_DEFAULT_ZONE_COUNT
        nodes = None if total_max is None else pool_node_ceiling(
            "gcp", int(total_max), int(field(props, "initialNodeCount", default=0)), zones)
        return GpuPool(nodes, field(props, "nodeConfig", "resourceLabels", default={}))
    return None


def gpu_pool_bounded_and_tagged(resource: Resource, report: Report) -> None:
    """A GPU node pool runs at most MAX_GPU_NODES nodes (a GKE pool counted per zone) and carries cost tags."""
    pool = gpu_pool(resource)
    if pool is None:
        return
    if pool.nodes_at_most is None or pool.nodes_at_most > MAX_GPU_NODES:
        report(f"GPU node pool {resource.name} can run {pool.nodes_at_most or 'unbounded'} nodes, more than "
               f"{MAX_GPU_NODES}; lower qwen2vl:gpuNodesMax (and gpuNodesMin: a GKE pool starts that many per zone)")
    missing = [tag for tag in COST_TAGS if not pool.tags.get(tag)]
    if missing:
        report(f"GPU node pool {resource.name} lacks cost tags {missing}; set qwen2vl:owner and qwen2vl:costCenter")


def eval_pool_has_ttl(resource: Resource, report: Report) -> None:
    """An eval stack's GPU node pool carries its TTL, so that the reaper and the cost report see it."""
    if not resource.stack.startswith("eval"):
        return
    pool = gpu_pool(resource)
    if pool is not None and not pool.tags.get(TTL_TAG):
        report(f"eval stack {resource.stack}: GPU node pool {resource.name} has no {TTL_TAG} tag; "
               "set qwen2vl:ttlHours")


def _serve_revisions(rayservice: Resource) -> list:
    serve = yaml.safe_load(field(rayservice.props, "spec", "serveConfigV2", default="{}")) or {}
    return [app.get("args", {}).get("revision") for app in serve.get("applications", [])]


def _images(rayservice: Resource) -> Iterable[tuple[str, Any]]:
    cluster = field(rayservice.props, "spec", "rayClusterConfig", default={})
    groups = [field(cluster, "headGroupSpec", default={}), *field(cluster, "workerGroupSpecs", default=[])]
    for group in groups:
        for key in ("initContainers", "containers"):
            for container in field(group, "template", "spec", key, default=[]):
                yield field(container, "name"), field(container, "image")


def prod_runs_pinned_image_and_model(resource: Resource, report: Report) -> None:
    """prod serves a full locked model commit from images pinned by digest (checked before the RayService is
    created; in preview the image digest is not known yet, the model revision is)."""
    if resource.type != RAY_SERVICE or not resource.stack.startswith("prod"):
        return
    for revision in _serve_revisions(resource):
        if revision is not None and not FULL_COMMIT.match(str(revision)):
            report(f"prod: the model is served by revision {revision!r}, not a full locked commit; resolve it "
                   "with scripts/lock_model.py and commit infra/model.lock.json")
    for name, image in _images(resource):
        if "@sha256:" not in str(image):
            report(f"prod: container {name} runs {image!r}, not an image by digest; let the stack build the "
                   "image or set qwen2vl:image to name@sha256:...")


def _load_balancer_type(resource: Resource) -> str | None:
    """The Service type a resource exposes: a Service's own, or the one KubeRay creates from a RayService's
    spec.serveService (the endpoint, infra/workload/network.py)."""
    if resource.type == "kubernetes:core/v1:Service":
        return field(resource.props, "spec", "type")
    if resource.type == RAY_SERVICE:
        return field(resource.props, "spec", "serveService", "spec", "type")
    return None


def load_balancer_needs_key_and_policy(resources: Iterable[Resource], stack: str, report: Report) -> None:
    """A LoadBalancer's namespace has a NetworkPolicy and the API key Secret (needs the whole stack, so it
    runs when the engine analyzes the stack: at the end of preview and of update)."""
    resources = list(resources)

    def namespace(resource: Resource) -> str:
        return field(resource.props, "metadata", "namespace", default="default")

    policies = {namespace(r) for r in resources if r.type == "kubernetes:networking.k8s.io/v1:NetworkPolicy"}
    keys = {namespace(r) for r in resources if r.type == "kubernetes:core/v1:Secret"
            and str(field(r.props, "metadata", "name", default="")).endswith("-api-key")}
    for resource in resources:
        if _load_balancer_type(resource) == "LoadBalancer":
            ns = namespace(resource)
            if ns not in policies or ns not in keys:
                report(f"{resource.name} exposes a LoadBalancer in namespace {ns} without "
                       + " and ".join(w for w, ok in (("a NetworkPolicy", ns in policies),
                                                        ("an API key Secret", ns in keys)) if not ok))


RESOURCE_POLICIES = {
    "gpu-pool-bounded-and-tagged": gpu_pool_bounded_and_tagged,
    "eval-pool-has-ttl": eval_pool_has_ttl,
    "prod-runs-pinned-image-and-model": prod_runs_pinned_image_and_model,
}
STACK_POLICIES = {"load-balancer-needs-key-and-policy": load_balancer_needs_key_and_policy}
