"""The placement check: the stack's pods placed on its node pools, its volumes bound, its upgrade
tried, all offline and in the scheduler's words. See docs/placement.md."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from infra.config import PROJECT, ConfigError, StackConfig
from infra.nodepool import GPU_TAINT, SYSTEM_POOL_NAME, gpu_pool_spec, system_pool_nodes, system_pool_spec
from infra.placement import kuberay
from infra.placement.charts import (ReleasePods, cluster_autoscaler_pods, device_plugin_pods, kuberay_operator_pods,
                                    monitoring_stack_pods)
from infra.catalog import UnknownInstance, instance_type, known_instances, on_demand_price
from infra.placement.clouds import GPU_RESOURCE, allocatable, cloud_facts, machine
from infra.placement.quantity import CPU, MEMORY, show
from infra.placement.scheduler import (
    Node,
    fit_order,
    least_allocated_score,
    matches_node_affinity,
    node_reasons,
    pod_request,
    untolerated_taint,
)
from infra.platform.addons import cluster_addons
from infra.platform.chart_values import kuberay_operator_values

RWO, RWOP = "ReadWriteOnce", "ReadWriteOncePod"
# The built-in PriorityClasses (kubernetes pkg/apis/scheduling/types.go: SystemCriticalPriority
# 2000000000; system-node-critical is 1000 above it). A pod without a class has priority 0 (no class of
# ours or of the clouds is globalDefault).
SYSTEM_PRIORITIES = {"system-cluster-critical": 2_000_000_000, "system-node-critical": 2_000_001_000}
# A pod the system pool would take if it had room.
_SYSTEM_SHORT = re.compile(rf"\b{SYSTEM_POOL_NAME}: (Insufficient|Too many pods)")


@dataclass
class PodPlacement:
    pod: str
    kind: str  # DaemonSet | Deployment | RayCluster | Job | ...
    requests: dict[str, int]
    pool: str | None = None  # the pool (DaemonSets: pools) it lands on; None = Pending
    node: str | None = None
    reasons: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)  # claim names it mounts
    # Its generic ephemeral volumes: claim name (<pod>-<volume>, as Kubernetes names them) -> claim spec.
    own_claims: dict[str, dict] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.pool is not None and not self.reasons

    def as_dict(self) -> dict:
        return {"pod": self.pod, "kind": self.kind, "pool": self.pool, "reasons": list(self.reasons),
                "requests": {r: show(r, self.requests[r]) for r in fit_order(self.requests)}}


@dataclass
class VolumeCheck:
    claim: str
    storage_class: str | None
    provisioner: str | None
    access_modes: list[str]
    nodes: list[str]
    reasons: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.reasons

    def as_dict(self) -> dict:
        return {"claim": self.claim, "storageClass": self.storage_class, "provisioner": self.provisioner,
                "accessModes": self.access_modes, "ok": self.ok, "reasons": list(self.reasons)}


@dataclass
class PlacementReport:
    stack: str
    ok: bool
    pods: list[PodPlacement] = field(default_factory=list)
    volumes: list[VolumeCheck] = field(default_factory=list)
    upgrade: dict = field(default_factory=dict)
    serve: list[dict] = field(default_factory=list)
    pools: list[dict] = field(default_factory=list)
    skipped: str | None = None
    # Per serving pod: its priority and what a higher-priority pod would evict from its node first.
    preemption: list[dict] = field(default_factory=list)

    def failures(self) -> list[str]:
        lines = [f"{p.pod}: {'; '.join(p.reasons)}" for p in self.pods if not p.ok]
        lines += [f"volume {v.claim}: {'; '.join(v.reasons)}" for v in self.volumes if not v.ok]
        lines += [f"serve {s['deployment']}: {s['reason']}" for s in self.serve if not s["ok"]]
        if self.upgrade and not self.upgrade.get("ok", True):
            lines.append(f"upgrade ({self.upgrade['strategy']}): {'; '.join(self.upgrade['reasons'])}")
        return lines

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "skipped": self.skipped,
            "pods": [p.as_dict() for p in self.pods],
            "volumes": [v.as_dict() for v in self.volumes],
            "upgrade": dict(self.upgrade),
            "serve": list(self.serve),
            "pools": list(self.pools),
            "preemption": list(self.preemption),
        }


class PlacementFailed(Exception):
    def __init__(self, report: PlacementReport, system_fit: str | None = None, too_small: str | None = None) -> None:
        self.report = report
        fixes = " ".join(_fixes(report, system_fit)).rstrip(";")
        super().__init__(
            f"Placement failed for stack {report.stack}; no resource was created. {too_small + ' ' if too_small else ''}"
            f"The scheduler would leave "
            f"these Pending: {' | '.join(report.failures())}. Fix: {fixes}. "
            f"Run `make plan` (python scripts/plan.py --stack {report.stack}) to see every pod's pool and headroom."
        )


def _fixes(report: PlacementReport, system_fit: str | None) -> list[str]:
    text = " ".join(report.failures())
    fixes = []
    if _SYSTEM_SHORT.search(text):
        shape = system_fit or "<type>"
        fits = ", the smallest catalog shape on which every pod fits" if system_fit else ""
        fixes.append(f"give the system pool a larger shape (pulumi config set {PROJECT}:systemInstanceType {shape} "
                     f"--stack {report.stack}{fits}) or lower the pod's requests;")
    if "Insufficient nvidia.com/gpu" in text and "device plugin" in text:
        fixes.append("let the device plugin reach the GPU nodes (its chart's default affinity needs a "
                     "nvidia.com/gpu.present=true label, or pass affinity: null with allow_null_values);")
    if "provisioner" in text or "StorageClass" in text:
        fixes.append(f"use a StorageClass whose provisioner this stack installs (pulumi config set "
                     f"{PROJECT}:storageClass <class> --stack {report.stack}) or install its CSI driver "
                     "(infra/platform/addons.py);")
    if "Multi-Attach" in text:
        fixes.append("give each worker its own volume (ephemeral volumeClaimTemplate), a ReadWriteMany/ReadOnlyMany "
                     "volume, or bake the model into the image;")
    if "upgrade" in text:
        fixes.append("set the RayService's upgradeStrategy.type to None where the GPU pool cannot hold two clusters, "
                     "or raise gpuNodesMax with an autoscaler that adds nodes;")
    if "serve" in text:
        fixes.append("match Serve's replicas to the worker group's maxReplicas;")
    return fixes or ["change the requests, the pools or their shapes so each pod fits;"]


# ---- building the cluster ---------------------------------------------------------------------

def _system_shape(cfg: StackConfig):
    instance = system_pool_spec(cfg).instance
    try:
        return machine(cfg.cloud, instance)
    except UnknownInstance:
        choices = ", ".join(name for name in known_instances(cfg.cloud) if not instance_type(cfg.cloud, name).gpus)
        raise ConfigError("systemInstanceType", instance, f"not a {cfg.cloud} machine shape in "
                          f"infra/catalog/instances.yaml; known: {choices}", cfg.stack,
                          "m6i.2xlarge" if cfg.cloud == "aws" else "e2-standard-8") from None


def _nodes(cfg: StackConfig) -> list[Node]:
    facts = cloud_facts()[cfg.cloud]
    addons = cluster_addons(cfg)
    gpu_pool, system_pool = gpu_pool_spec(cfg), system_pool_spec(cfg)
    nodes = []
    system_shape = _system_shape(cfg)
    gpu_shape = machine(cfg.cloud, gpu_pool.shape.instance)
    for pool, shape, labels, taints in (
        (system_pool, system_shape, {}, []),
        (gpu_pool, gpu_shape, {**gpu_pool.node_labels, **{k: v.format(accelerator=gpu_shape.accelerator)
                                                    for k, v in facts.get("gpu_node_labels", {}).items()}},
         [dict(gpu_pool.taint)]),
    ):
        grows = pool.name in addons.autoscaled_pools
        initial = system_pool_nodes(cfg) if pool is system_pool else pool.min_nodes
        if grows:
            count = max(pool.max_nodes, initial)
        else:
            initial = count = system_pool_nodes(cfg) if pool is system_pool else max(pool.min_nodes, 1)
        for index in range(count):
            name = f"{pool.name}-{index}"
            # kubernetes.io/os and hostname: set by the kubelet on every node
            # (https://kubernetes.io/docs/reference/labels-annotations-taints/).
            node_labels = {**facts.get("node_labels", {}), **labels, "kubernetes.io/hostname": name,
                           "kubernetes.io/os": "linux",
                           "node.kubernetes.io/instance-type": shape.instance}
            gpu_advertised = bool(facts["provides_gpu_resource"])
            nodes.append(Node(name, pool.name, node_labels, [dict(t) for t in taints],
                              allocatable(shape, gpu_advertised), standby=index >= initial))
    return nodes


@dataclass(frozen=True)
class ClusterPod:
    name: str
    kind: str
    pod_spec: dict
    replicas: int = 1
    # A device plugin: the nodes running its pod advertise their GPUs as nvidia.com/gpu.
    advertises_gpus: bool = False


def _cloud_pods(cfg: StackConfig) -> list[ClusterPod]:
    facts = cloud_facts()[cfg.cloud]
    entries = list(facts["system_pods"])
    for addon in cluster_addons(cfg).managed_addons:
        entries += facts.get("addons", {}).get(addon, {}).get("pods", [])
    pods = []
    for entry in entries:
        # Every cloud system pod runs at a critical class, node agents at the node one (aws-node,
        # kube-proxy, CoreDNS, kube-dns, the CSI pods, GKE's agents: their manifests or `kubectl get pods
        # -o yaml` on the cloud's nodes).
        critical = "system-node-critical" if entry["kind"] == "DaemonSet" else "system-cluster-critical"
        spec = {"containers": [{"name": entry["name"], "resources": {"requests": dict(entry.get("requests", {}))}}],
                "tolerations": list(entry.get("tolerations", [])), "priorityClassName": critical}
        if entry.get("affinity"):
            spec["affinity"] = entry["affinity"]
        pods.append(ClusterPod(f"kube-system/{entry['name']}", entry["kind"], spec, entry.get("replicas", 1)))
    return pods


def _release(release: ReleasePods, advertises_gpus: bool = False) -> ClusterPod:
    return ClusterPod(release.name, release.kind, release.pod_spec, release.replicas, advertises_gpus)


def _platform_pods(cfg: StackConfig) -> list[ClusterPod]:
    pods = []
    if not cluster_addons(cfg).provides_device_plugin:
        pods.append(_release(device_plugin_pods(gpu_pool_spec(cfg).placement), advertises_gpus=True))
    pods.append(_release(kuberay_operator_pods()))
    if cluster_addons(cfg).cluster_autoscaler:
        pods.append(_release(cluster_autoscaler_pods(cfg.region)))
    if cfg.installs_monitoring:
        pods += [_release(release) for release in monitoring_stack_pods(cfg.monitoring_namespace)]
    return pods


def _workload_pods(objects: list[dict], operator_env: list[dict] | None, prefix_suffix: str = "") -> list[ClusterPod]:
    pods = []
    for obj in objects:
        kind, meta = obj["kind"], obj["metadata"]
        name = f"{meta.get('namespace', 'default')}/{meta['name']}{prefix_suffix}"
        if kind == "RayService":
            # The active cluster as it stands under load, Serve at its maximum: that is when an upgrade's
            # second cluster, or a node event, has to find room.
            pods += [ClusterPod(p.name, "RayCluster", p.pod_spec)
                     for p in kuberay.cluster_pods(obj, name, operator_env, at_serve_max=True)]
        elif kind in ("Job", "Deployment", "StatefulSet", "DaemonSet"):
            replicas = obj["spec"].get("replicas", 1) if kind in ("Deployment", "StatefulSet") else 1
            pods.append(ClusterPod(name, kind, obj["spec"]["template"]["spec"], replicas))
        elif kind == "Pod":
            pods.append(ClusterPod(name, kind, obj["spec"]))
    return pods


# ---- scheduling -------------------------------------------------------------------------------

def _claims(pod_name: str, pod_spec: dict) -> tuple[list[str], dict[str, dict]]:
    """(every claim the pod mounts, the ones it owns): a generic ephemeral volume is a claim named
    <pod>-<volume>, made from its volumeClaimTemplate for this pod alone."""
    names, own = [], {}
    for volume in pod_spec.get("volumes", []):
        if "persistentVolumeClaim" in volume:
            names.append(volume["persistentVolumeClaim"]["claimName"])
        template = (volume.get("ephemeral") or {}).get("volumeClaimTemplate")
        if template:
            name = f"{pod_name}-{volume['name']}"
            names.append(name)
            own[name] = template["spec"]
    return names, own


def _pool_reasons(pod_spec: dict, request: dict[str, int], nodes: list[Node], hints: dict[str, str]) -> str:
    by_pool: dict[str, list[str]] = {}
    for node in nodes:
        reasons = node_reasons(pod_spec, request, node)
        if node.pool not in by_pool or len(reasons) < len(by_pool[node.pool]):
            by_pool[node.pool] = reasons
    parts = []
    for pool, reasons in by_pool.items():
        text = ", ".join(reasons)
        if any(r.startswith(f"Insufficient {GPU_RESOURCE}") for r in reasons) and pool in hints:
            text += f" ({hints[pool]})"
        parts.append(f"{pool}: {text}")
    return f"0/{len(by_pool)} pools: " + "; ".join(parts)


@dataclass(frozen=True)
class ClusterObjects:
    """The cluster-scoped objects the scheduler and admission read: PriorityClass values by name and
    RuntimeClasses by name (built-ins plus what the workload creates)."""

    priorities: dict[str, int]
    runtime_classes: dict[str, dict]

    @classmethod
    def of(cls, objects: list[dict]) -> "ClusterObjects":
        priorities = {**SYSTEM_PRIORITIES, **{o["metadata"]["name"]: int(o["value"]) for o in objects
                                               if o["kind"] == "PriorityClass"}}
        runtime = {o["metadata"]["name"]: o for o in objects if o["kind"] == "RuntimeClass"}
        return cls(priorities, runtime)

    def priority(self, pod_spec: dict) -> int:
        return self.priorities.get(pod_spec.get("priorityClassName") or "", 0)

    def request(self, pod_spec: dict) -> dict[str, int]:
        return pod_request(pod_spec, self.runtime_classes)


def _schedule(pod: ClusterPod, nodes: list[Node], hints: dict[str, str], known: ClusterObjects) -> list[PodPlacement]:
    """Each replica on the feasible node that scores best (least allocated; the first such node on a tie)."""
    request = known.request(pod.pod_spec)
    results = []
    for index in range(pod.replicas):
        name = pod.name if pod.replicas == 1 else f"{pod.name}-{index}"
        volumes, own_claims = _claims(name, pod.pod_spec)
        placement = PodPlacement(name, pod.kind, request, volumes=volumes, own_claims=own_claims)
        feasible = [n for n in nodes if not n.standby and not node_reasons(pod.pod_spec, request, n)]
        node = max(feasible, key=lambda n: least_allocated_score(request, n), default=None)
        if node is None:  # the pool's autoscaler adds a node if a new one would take the pod
            node = next((n for n in nodes if n.standby and not node_reasons(pod.pod_spec, request, n)), None)
            if node is not None:
                node.standby = False
        if node is None:
            placement.reasons.append(_pool_reasons(pod.pod_spec, request, nodes, hints))
        else:
            node.bind(name, request, known.priority(pod.pod_spec))
            placement.pool, placement.node = node.pool, node.name
        results.append(placement)
    return results


def _run_daemonset(pod: ClusterPod, nodes: list[Node], known: ClusterObjects) -> tuple[PodPlacement, list[Node]]:
    """A DaemonSet pod on every node whose labels and taints admit it (the DaemonSet controller uses
    the same NodeAffinity and TaintToleration predicates, pkg/controller/daemon NodeShouldRunDaemonPod)."""
    request = known.request(pod.pod_spec)
    placement = PodPlacement(pod.name, "DaemonSet", request)
    eligible = [n for n in nodes if matches_node_affinity(pod.pod_spec, n.labels, n.name)
                and untolerated_taint(pod.pod_spec, n) is None]
    placed = []
    for node in eligible:
        reasons = node_reasons(pod.pod_spec, request, node)
        if reasons:
            placement.reasons.append(f"{node.pool}: {', '.join(reasons)}")
        else:
            node.bind(pod.name, request, known.priority(pod.pod_spec))
            placed.append(node)
    placement.pool = ", ".join(dict.fromkeys(n.pool for n in placed)) or None
    return placement, placed


def _daemonsets(cfg: StackConfig, nodes: list[Node], known: ClusterObjects) -> tuple[list[PodPlacement], dict[str, str]]:
    """Place every DaemonSet; on clouds without their own device plugin, only nodes that run ours
    advertise nvidia.com/gpu. Returns the placements and, per GPU pool lacking it, why."""
    results, hints = [], {}
    cluster = [*_cloud_pods(cfg), *_platform_pods(cfg)]
    provides = cloud_facts()[cfg.cloud]["provides_gpu_resource"]
    for pod in (p for p in cluster if p.kind == "DaemonSet"):
        placement, placed = _run_daemonset(pod, nodes, known)
        if pod.advertises_gpus:
            for node in placed:
                node.allocatable[GPU_RESOURCE] = machine(cfg.cloud, node.labels["node.kubernetes.io/instance-type"]).gpus
            missed = [n for n in nodes if GPU_TAINT in n.taints and n not in placed]
            for node in missed:
                hints[node.pool] = (f"no device plugin pod ({pod.name}) on its nodes: "
                                    f"{', '.join(node_reasons(pod.pod_spec, placement.requests, node)) or 'not scheduled'}")
            if missed and not placed:
                placement.reasons.append("runs on 0 GPU nodes: " + "; ".join(f"{p}: {h}" for p, h in hints.items()))
        results.append(placement)
    if not provides and not any(p.advertises_gpus for p in cluster):
        hints.update({n.pool: "no device plugin installed" for n in nodes if GPU_TAINT in n.taints})
    return results, hints


# ---- volumes ----------------------------------------------------------------------------------

def _storage_classes(cfg: StackConfig) -> dict[str, dict]:
    classes = {name: dict(entry) for name, entry in cloud_facts()[cfg.cloud]["storage_classes"].items()}
    for obj in cluster_addons(cfg).storage_classes:
        default = obj.get("metadata", {}).get("annotations", {}).get("storageclass.kubernetes.io/is-default-class")
        if default == "true":
            for entry in classes.values():
                entry["default"] = False
        classes[obj["metadata"]["name"]] = {"provisioner": obj["provisioner"], "default": default == "true",
                                            "volumeBindingMode": obj.get("volumeBindingMode", "Immediate")}
    return classes


def _drivers(cfg: StackConfig) -> set[str]:
    facts = cloud_facts()[cfg.cloud]
    drivers = set(facts["csi_drivers"])
    for addon in cluster_addons(cfg).managed_addons:
        drivers |= set(facts.get("addons", {}).get(addon, {}).get("csi_drivers", []))
    return drivers


def _claim_specs(objects: list[dict], placements: list[PodPlacement]) -> dict[str, dict]:
    claims = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "PersistentVolumeClaim"}
    for placement in placements:
        claims.update(placement.own_claims)
    return claims


def _check_volume(cfg: StackConfig, name: str, spec: dict, users: list[PodPlacement]) -> VolumeCheck:
    classes, drivers = _storage_classes(cfg), _drivers(cfg)
    migration = cloud_facts()["csi_migration"]
    class_name = spec.get("storageClassName")
    if class_name is None:
        class_name = next((n for n, c in classes.items() if c.get("default")), None)
    modes = list(spec.get("accessModes", []))
    nodes = sorted({p.node for p in users if p.node})
    check = VolumeCheck(name, class_name, None, modes, nodes)
    if class_name is None:
        check.reasons.append("no storageClassName and the cluster has no default StorageClass, so it waits for a "
                             f"matching PersistentVolume forever; classes here: {', '.join(classes)}")
    elif class_name not in classes:
        check.reasons.append(f'StorageClass "{class_name}" does not exist on this cluster; classes here: '
                             f"{', '.join(classes)}")
    else:
        provisioner = classes[class_name]["provisioner"]
        check.provisioner = provisioner
        driver = migration.get(provisioner, provisioner)
        if driver not in drivers:
            via = f" (in-tree {provisioner} is served by {driver} since CSI migration)" if driver != provisioner else ""
            check.reasons.append(f'StorageClass "{class_name}" needs provisioner {driver}{via}, which this stack does '
                                 f"not install; installed: {', '.join(sorted(drivers)) or 'none'} — the claim stays "
                                 f"Pending (waiting for a volume to be created by external provisioner {driver})")
    if RWOP in modes and len(users) > 1:
        check.reasons.append(f"ReadWriteOncePod claim used by {len(users)} pods: {', '.join(p.pod for p in users)}")
    elif modes == [RWO] and len(nodes) > 1:
        check.reasons.append(f"ReadWriteOnce claim mounted by pods on {len(nodes)} nodes ({', '.join(nodes)}): the second "
                             "attach fails with Multi-Attach error, the volume is already exclusively attached to one node")
    return check


def _volumes(cfg: StackConfig, objects: list[dict], placed: list[PodPlacement]) -> list[VolumeCheck]:
    checks = []
    for name, spec in _claim_specs(objects, placed).items():
        users = [p for p in placed if name in p.volumes]
        check = _check_volume(cfg, name, spec, users)
        if not check.ok:
            for user in users:
                user.reasons.append(f"unbound PersistentVolumeClaim {name}")
        checks.append(check)
    return checks


# ---- the report -------------------------------------------------------------------------------

def _pools(nodes: list[Node]) -> list[dict]:
    """Per pool, the nodes that run (standby ones the autoscaler has not needed are not counted)."""
    pools = []
    for pool in dict.fromkeys(n.pool for n in nodes):
        members = [n for n in nodes if n.pool == pool and not n.standby]
        if not members:
            continue
        row = {"pool": pool, "nodes": len(members), "instance": members[0].labels["node.kubernetes.io/instance-type"]}
        for resource in (CPU, MEMORY, GPU_RESOURCE):
            total = sum(n.allocatable.get(resource, 0) for n in members)
            if total or resource != GPU_RESOURCE:
                row[resource] = {"allocatable": show(resource, total),
                                 "free": show(resource, sum(max(n.free(resource), 0) for n in members)),
                                 "largest_free": show(resource, max(max(n.free(resource), 0) for n in members))}
        pools.append(row)
    return pools


def _serve(rayservice: dict) -> list[dict]:
    config = kuberay.serve_config_of(rayservice)
    worker_gpus = sum(count * gpus for _, count, gpus in kuberay.worker_ray_gpus(rayservice["spec"]["rayClusterConfig"]))
    rows = []
    for deployment, replicas, gpus in kuberay.serve_gpu_demand(config):
        need = replicas * gpus
        ok = need <= worker_gpus
        rows.append({"deployment": deployment, "replicas": replicas, "gpus_per_replica": gpus, "worker_gpus": worker_gpus,
                     "ok": ok, "reason": "" if ok else f"{replicas} replicas x {gpus:g} GPUs need {need:g} Ray GPUs, "
                     f"the worker group offers at most {worker_gpus}: the extra replicas stay PENDING_ALLOCATION"})
    return rows


def _upgrade(cfg: StackConfig, objects: list[dict], env: list[dict] | None, nodes: list[Node], hints: dict,
             placed: list[PodPlacement], known: ClusterObjects) -> dict:
    rayservice = next((o for o in objects if o["kind"] == "RayService"), None)
    if rayservice is None:
        return {}
    strategy = kuberay.upgrade_strategy(rayservice, env)
    if strategy != kuberay.NEW_CLUSTER:
        return {"strategy": strategy, "ok": True, "reasons": [], "pods": [],
                "note": "no second RayCluster: the program deletes and recreates the RayService on a change to "
                        "rayClusterConfig (downtime until the new cluster serves)"}
    # The new cluster at Serve's initial replicas, beside the active one at Serve's maximum.
    pending = [ClusterPod(p.name + "-pending", "RayCluster", p.pod_spec)
               for p in kuberay.cluster_pods(rayservice, _name(rayservice), env)]
    results = [r for pod in pending for r in _schedule(pod, nodes, hints, known)]
    reasons = [f"{r.pod}: {'; '.join(r.reasons)}" for r in results if not r.ok]
    everyone = [*placed, *results]
    for name, spec in _claim_specs(objects, results).items():
        users = [p for p in everyone if name in p.volumes]
        check = _check_volume(cfg, name, spec, users)
        reasons += [f"volume {name}: {r}" for r in check.reasons if "Multi-Attach" in r or "Once" in r]
    return {"strategy": strategy, "ok": not reasons, "reasons": reasons,
            "pods": [r.as_dict() for r in results]}


def _name(obj: dict) -> str:
    return f"{obj['metadata'].get('namespace', 'default')}/{obj['metadata']['name']}"


def placement_report(cfg: StackConfig, objects: list[dict]) -> PlacementReport:
    """Every pod placed (or not, with the scheduler's reasons), every volume checked, the upgrade tried."""
    if cfg.cloud == "existing":
        return PlacementReport(cfg.stack, ok=True, skipped=(
            "cloud=existing: the node shapes of an existing cluster are not in the stack config, so the placement "
            "check did not run; check `kubectl describe nodes` against the pods' requests yourself"))
    env = kuberay_operator_values().get("env")
    known = ClusterObjects.of(objects)
    nodes = _nodes(cfg)
    daemonsets, hints = _daemonsets(cfg, nodes, known)
    device_plugins = {p.name for p in _platform_pods(cfg) if p.advertises_gpus}
    cluster = [p for p in (*_cloud_pods(cfg), *_platform_pods(cfg)) if p.kind != "DaemonSet"]
    workload = _workload_pods(objects, env)
    placed = [r for pod in (*cluster, *workload) for r in _schedule(pod, nodes, hints, known)]
    volumes = _volumes(cfg, objects, placed)
    rayservice = next((o for o in objects if o["kind"] == "RayService"), None)
    serve = _serve(rayservice) if rayservice else []
    pools = _pools(nodes)  # headroom in steady state, before an upgrade's second cluster
    preemption = _preemption(placed, nodes)
    upgrade = _upgrade(cfg, objects, env, nodes, hints, placed, known)
    pods = [*daemonsets, *placed]
    device_plugin_ok = all(p.ok for p in daemonsets if p.pod in device_plugins)
    ok = (all(p.ok for p in placed) and device_plugin_ok and all(v.ok for v in volumes)
          and all(s["ok"] for s in serve) and upgrade.get("ok", True))
    return PlacementReport(cfg.stack, ok, pods, volumes, upgrade, serve, pools, preemption=preemption)


def _preemption(placed: list[PodPlacement], nodes: list[Node]) -> list[dict]:
    """For each serving pod: its priority, the pods DefaultPreemption would evict before it from its node
    (lower priority), and how large a higher-priority newcomer may be before the serving pod itself goes."""
    by_name = {n.name: n for n in nodes}
    rows = []
    for placement in placed:
        if placement.kind != "RayCluster" or placement.node is None:
            continue
        node = by_name[placement.node]
        priority = next(prio for name, _, prio in node.bound if name == placement.pod)
        before = [(name, req) for name, req, prio in node.bound if prio < priority]
        margin = {r: show(r, max(node.free(r), 0) + sum(req.get(r, 0) for _, req in before)) for r in (CPU, MEMORY)}
        rows.append({"pod": placement.pod, "node": node.name, "priority": priority,
                     "evicted_first": [name for name, _ in before], "room_before_eviction": margin})
    return rows


def smallest_fitting_system_instance(cfg: StackConfig, objects: list[dict]) -> str | None:
    """The catalog's smallest GPU-less shape of this cloud with which the whole stack places, if any: fewest vCPUs,
    then least memory, then the cheapest; never a burstable one (its CPU credits run out under a steady head)."""
    def price(name: str) -> float:
        published = on_demand_price(cfg.cloud, name, cfg.region)
        return published.usd_per_hour if published else float("inf")

    names = [name for name in known_instances(cfg.cloud)
             if not instance_type(cfg.cloud, name).gpus and not instance_type(cfg.cloud, name).burstable]
    candidates = sorted((machine(cfg.cloud, name) for name in names),
                        key=lambda shape: (shape.vcpus, shape.memory_gib, price(shape.instance), shape.instance))
    for shape in candidates:
        if placement_report(replace(cfg, system_instance_type=shape.instance), objects).ok:
            return shape.instance
    return None


def _too_big_for_system_node(cfg: StackConfig, report: PlacementReport) -> str | None:
    """A pod of the system pool that would not fit even an empty system node: the shape is too small for it,
    whatever else runs there; said as such."""
    instance = system_pool_spec(cfg).instance
    empty = allocatable(machine(cfg.cloud, instance), gpu_advertised=False)
    for placement in report.pods:
        if placement.ok or GPU_RESOURCE in placement.requests:
            continue
        short = [r for r in (CPU, MEMORY) if placement.requests.get(r, 0) > empty[r]]
        if short:
            what = "the Ray head" if placement.pod.endswith("/head") else placement.pod
            needs = ", ".join(f"{r} {show(r, placement.requests[r])}" for r in short)
            has = ", ".join(f"{r} {show(r, empty[r])}" for r in short)
            return (f"{what[0].upper()}{what[1:]} does not fit a {instance} system node ({PROJECT}:systemInstanceType) even empty: it "
                    f"requests {needs}, the node has {has} allocatable after the cloud's reservations.")
    return None


def check_placement(cfg: StackConfig, objects: list[dict]) -> PlacementReport:
    """The report; raises PlacementFailed when any pod would stay Pending (first saying so when a pod cannot fit
    the system shape at all)."""
    report = placement_report(cfg, objects)
    if not report.ok:
        system_short = bool(_SYSTEM_SHORT.search(" ".join(report.failures())))
        raise PlacementFailed(report, smallest_fitting_system_instance(cfg, objects) if system_short else None,
                              _too_big_for_system_node(cfg, report))
    return report
