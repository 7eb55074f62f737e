"""The placement check against what the kube-scheduler, KubeRay and the clouds would do.

The first tests are the review's scheduling and storage blockers (reviews/review-k8s.md #1, #2, #3, #5;
review-pulumi.md #1-#3), rebuilt from the configuration of commit 216a77b, which the check must refuse
with the scheduler's reason; then the stacks as they are now, which must pass."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from infra import pins
from infra.config import ConfigError, parse_stack_config
from infra.nodepool import GpuPoolSpec
from infra.offline.engine import project_name, stack_config
from infra.placement import PlacementFailed, check_placement, placement_report
from infra.placement import charts, check, kuberay
from infra.placement.clouds import GIB, MIB, MachineShape, allocatable, capacity, machine, reserved_cpu_millicores
from infra.placement.scheduler import Node, node_reasons, pod_request
from infra.platform.addons import ClusterAddons
from infra.preflight_gate import model_lock
from infra.workload.manifests import workload_spec
from infra.workload.objects import workload_objects

STACKS = ("eval", "staging", "prod")
# 216a77b infra/workload/rayservice.py:32, used as requests and limits (:90).
OLD_HEAD_RESOURCES = {"cpu": "4", "memory": "16Gi"}
# 216a77b infra/platform/device_plugin.py:32-36: nodeSelector and toleration only, chart affinity kept.
OLD_DEVICE_PLUGIN_VALUES = {"nodeSelector": {"qwen2vl.io/gpu-pool": "gpu", "qwen2vl.io/gpu-type": "L4"},
                            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}
# The charts at our pins, in the shared folder beside the clone (as CI lays it out).
CHART_SOURCES = Path(__file__).resolve().parents[2] / "shared" / "reference" / "charts"


def stack_cfg(stack: str, **overrides: str):
    config, secret_keys = stack_config(stack)
    prefix = f"{project_name()}:"
    raw = {k[len(prefix):]: v for k, v in config.items() if k.startswith(prefix) and k not in secret_keys}
    return parse_stack_config({**raw, **overrides}, stack)


def objects_of(cfg) -> list[dict]:
    lock, _ = model_lock(cfg, deploying=False)
    return workload_objects(workload_spec(cfg, lock))


def rayservice_of(objects: list[dict]) -> dict:
    return next(o for o in objects if o["kind"] == "RayService")


def with_old_head(objects: list[dict]) -> list[dict]:
    objects = copy.deepcopy(objects)
    cluster = rayservice_of(objects)["spec"]["rayClusterConfig"]
    cluster.pop("enableInTreeAutoscaling", None)  # 216a77b had no autoscaler sidecar and one fixed worker
    cluster["workerGroupSpecs"][0].update({"replicas": 1, "minReplicas": 1})
    head = cluster["headGroupSpec"]["template"]["spec"]
    head["containers"][0]["resources"] = {"requests": dict(OLD_HEAD_RESOURCES), "limits": dict(OLD_HEAD_RESOURCES)}
    head.pop("tolerations", None)
    head.pop("nodeSelector", None)
    return objects


def pod(report, name_part: str):
    return next(p for p in report.pods if name_part in p.pod)


# ---- the review's blockers, on the configuration of 216a77b ---------------------------------------

@pytest.mark.parametrize("stack,instance", [("eval", "m6i.xlarge"), ("prod", "e2-standard-4")])
def test_old_head_does_not_fit_the_old_system_node(stack, instance):
    """review-k8s #1 / review-pulumi #1: a 4 CPU / 16Gi head on a 4 vCPU / 16 GiB system node."""
    cfg = stack_cfg(stack, systemInstanceType=instance)
    report = placement_report(cfg, with_old_head(objects_of(cfg)))
    head = pod(report, "/head")
    assert not report.ok and head.pool is None
    reason = head.reasons[0]
    assert reason.startswith("0/2 pools: system: Insufficient cpu (requests 4, ")
    assert "Insufficient memory (requests 16Gi" in reason
    assert "gpu: untolerated taint nvidia.com/gpu=present" in reason
    with pytest.raises(PlacementFailed, match=r"head: 0/2 pools: system: Insufficient cpu") as failure:
        check_placement(cfg, with_old_head(objects_of(cfg)))
    assert "systemInstanceType" in str(failure.value) and "no resource was created" in str(failure.value)


@pytest.mark.parametrize("stack,instance,old_head,suggested", [
    ("eval", "m6i.xlarge", True, "m6i.2xlarge"),  # the review's fix for the 4 CPU / 16Gi head
    # prod runs the monitoring stack beside a NewCluster upgrade's second head: e2-standard-4 is too small.
    ("prod", "e2-standard-2", False, "e2-standard-8"),
])
def test_fix_names_the_smallest_system_shape_that_fits(stack, instance, old_head, suggested):
    cfg = stack_cfg(stack, systemInstanceType=instance)
    objects = with_old_head(objects_of(cfg)) if old_head else objects_of(cfg)
    with pytest.raises(PlacementFailed) as failure:
        check_placement(cfg, objects)
    assert f"pulumi config set qwen2vl:systemInstanceType {suggested} --stack {stack}, the smallest" in str(failure.value)


def test_old_head_fails_even_on_an_empty_node():
    """Allocatable alone, before any system pod, is below 4 CPU / 16Gi on both shapes (not a packing artefact)."""
    for cloud, instance in (("aws", "m6i.xlarge"), ("gcp", "e2-standard-4")):
        node = Node("n", "system", {}, [], allocatable(machine(cloud, instance), gpu_advertised=False))
        spec = {"containers": [{"name": "ray-head", "resources": {"limits": dict(OLD_HEAD_RESOURCES)}}]}
        reasons = node_reasons(spec, pod_request(spec), node)
        assert [r.split(" (")[0] for r in reasons] == ["Insufficient cpu", "Insufficient memory"], (cloud, reasons)


def test_device_plugin_without_the_gpu_label_leaves_the_worker_pending(monkeypatch):
    """review-k8s #3 / review-pulumi #2: the chart's default affinity matches no node of the old GPU pool."""
    monkeypatch.setattr(charts, "device_plugin_values", lambda placement: copy.deepcopy(OLD_DEVICE_PLUGIN_VALUES))
    monkeypatch.setattr(GpuPoolSpec, "node_labels", property(lambda self: dict(self.labels)))
    cfg = stack_cfg("eval")
    report = placement_report(cfg, objects_of(cfg))
    plugin = pod(report, "nvidia-device-plugin")
    assert plugin.pool is None
    assert plugin.reasons == ["runs on 0 GPU nodes: gpu: no device plugin pod (kube-system/nvidia-device-plugin) on "
                              "its nodes: didn't match Pod's node affinity/selector"]
    worker = pod(report, "gpu-worker-0")
    assert worker.pool is None and "gpu: Insufficient nvidia.com/gpu (requests 4, free 0" in worker.reasons[0]
    assert not report.ok
    with pytest.raises(PlacementFailed, match=r"Fix: let the device plugin reach the GPU nodes") as failure:
        check_placement(cfg, objects_of(cfg))
    assert "systemInstanceType" not in str(failure.value)  # the system pool is not what is short


def test_device_plugin_chart_affinity_survives_an_empty_map():
    """Helm merges `affinity: {}` into the default map (coalesce.go CoalesceTables): the terms stay; null removes them."""
    kept = charts.release_pods(charts.DEVICE_PLUGIN, {**OLD_DEVICE_PLUGIN_VALUES, "affinity": {}}).pod_spec
    assert "nvidia.com/gpu.present" in yaml.safe_dump(kept["affinity"])
    removed = charts.release_pods(charts.DEVICE_PLUGIN, {**OLD_DEVICE_PLUGIN_VALUES, "affinity": None}).pod_spec
    assert "affinity" not in removed


def test_gp2_without_the_ebs_csi_driver_stays_pending(monkeypatch):
    """review-k8s #2 / review-pulumi #3: the old EKS cluster installed no add-on, and gp2 needs ebs.csi.aws.com."""
    monkeypatch.setattr(check, "cluster_addons", lambda cfg: ClusterAddons((), (), provides_device_plugin=False))
    cfg = stack_cfg("eval", storageClass="gp2")
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": {"name": "qwen2vl-model-cache", "namespace": "qwen2vl"},
             "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "gp2",
                      "resources": {"requests": {"storage": "100Gi"}}}}
    objects = [claim, *objects_of(cfg)]
    worker = rayservice_of(objects)["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]
    worker["volumes"] = [v for v in worker["volumes"] if v["name"] != "model-cache"]
    worker["volumes"].append({"name": "model-cache", "persistentVolumeClaim": {"claimName": "qwen2vl-model-cache"}})
    report = placement_report(cfg, objects)
    volume = next(v for v in report.volumes if v.claim == "qwen2vl-model-cache")
    assert not volume.ok and volume.provisioner == "kubernetes.io/aws-ebs"
    assert "needs provisioner ebs.csi.aws.com" in volume.reasons[0] and "installed: none" in volume.reasons[0]
    assert "unbound PersistentVolumeClaim qwen2vl-model-cache" in pod(report, "gpu-worker-0").reasons
    assert not report.ok


def _shared_claim_objects(cfg, workers: int, strategy: str | None) -> list[dict]:
    """The 216a77b shape: one ReadWriteOnce claim mounted by every worker of the group."""
    objects = objects_of(cfg)
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": {"name": "qwen2vl-model-cache", "namespace": "qwen2vl"},
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "200Gi"}}}}
    service = rayservice_of(objects)
    group = service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    group.update({"replicas": workers, "minReplicas": workers, "maxReplicas": cfg.gpu_nodes_max})
    spec = group["template"]["spec"]
    spec["volumes"] = [v for v in spec["volumes"] if v["name"] != "model-cache"]
    spec["volumes"].append({"name": "model-cache", "persistentVolumeClaim": {"claimName": "qwen2vl-model-cache"}})
    if strategy is None:
        service["spec"].pop("upgradeStrategy", None)
    else:
        service["spec"]["upgradeStrategy"] = {"type": strategy}
    return [claim, *objects]


def test_two_workers_on_one_read_write_once_volume():
    """review-k8s #5 / review-pulumi #15: a second worker on another node cannot attach the RWO volume."""
    cfg = stack_cfg("prod")
    report = placement_report(cfg, _shared_claim_objects(cfg, workers=2, strategy="None"))
    volume = next(v for v in report.volumes if v.claim == "qwen2vl-model-cache")
    assert len(volume.nodes) > 1
    assert any("Multi-Attach" in r for r in volume.reasons)
    assert not report.ok


def test_new_cluster_upgrade_on_a_one_node_pool():
    """review-k8s #5: with no upgradeStrategy KubeRay 1.4.2 prepares a second cluster; eval has one GPU node."""
    cfg = stack_cfg("eval")
    report = placement_report(cfg, _shared_claim_objects(cfg, workers=1, strategy=None))
    assert report.upgrade["strategy"] == "NewCluster" and not report.upgrade["ok"]
    assert any("gpu-worker-0-pending: 0/2 pools:" in r and "Insufficient nvidia.com/gpu (requests 4, free 0" in r
               for r in report.upgrade["reasons"])
    assert not report.ok


def test_new_cluster_upgrade_attaches_the_same_volume_on_a_second_node():
    """Prod could add the GPU node, but the pending worker mounts the active worker's RWO claim there."""
    cfg = stack_cfg("prod")
    report = placement_report(cfg, _shared_claim_objects(cfg, workers=1, strategy="NewCluster"))
    assert any("Multi-Attach" in r for r in report.upgrade["reasons"])


def test_a_storage_class_the_stack_cannot_provision_is_named():
    cfg = stack_cfg("staging", storageClass="fast-ssd")
    with pytest.raises(PlacementFailed, match=r'StorageClass "fast-ssd" does not exist on this cluster; classes here: '
                                              r"standard-rwo, premium-rwo, standard") as failure:
        check_placement(cfg, objects_of(cfg))
    assert "unbound PersistentVolumeClaim" in str(failure.value)


# ---- the stacks as they are -------------------------------------------------------------------

@pytest.mark.parametrize("stack", STACKS)
def test_stack_places_every_pod(stack):
    cfg = stack_cfg(stack)
    report = check_placement(cfg, objects_of(cfg))
    assert report.ok and report.failures() == []
    assert {p.pool for p in report.pods if "/head" in p.pod} == {"system"}
    assert {p.pool for p in report.pods if "gpu-worker" in p.pod} == {"gpu"}


def test_existing_cluster_is_skipped_with_a_warning():
    cfg = stack_cfg("local")
    report = check_placement(cfg, objects_of(cfg))
    assert report.ok and "did not run" in report.skipped


def test_unknown_system_instance_type_is_a_config_error():
    cfg = stack_cfg("eval", systemInstanceType="m5.xlarge")
    with pytest.raises(ConfigError, match=r"systemInstanceType = 'm5.xlarge' .* known: t3.small"):
        placement_report(cfg, objects_of(cfg))


def test_too_small_system_instance_names_the_pod():
    cfg = stack_cfg("eval", systemInstanceType="t3.medium")
    with pytest.raises(PlacementFailed, match=r"qwen2vl/qwen2vl/head: 0/2 pools: system: Insufficient"):
        check_placement(cfg, objects_of(cfg))


def test_the_check_is_pure():
    """No Pulumi import: the check runs (and is tested) without the engine."""
    import subprocess
    import sys
    probe = "import sys, infra.placement; print(sorted(m for m in sys.modules if m.split('.')[0].startswith('pulumi')))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---- KubeRay's pods, from its source ----------------------------------------------------------

def test_kuberay_injects_wait_gcs_ready_and_the_autoscaler():
    cluster = {"enableInTreeAutoscaling": True,
               "headGroupSpec": {"template": {"spec": {"containers": [
                   {"name": "ray-head", "resources": {"requests": {"cpu": "2", "memory": "8Gi"}}}]}}},
               "workerGroupSpecs": [{"groupName": "gpu", "replicas": 5, "minReplicas": 1, "maxReplicas": 2,
                                     "template": {"spec": {"containers": [
                                         {"name": "w", "resources": {"requests": {"cpu": "100m"}}}]}}}]}
    head = kuberay.head_pod(cluster, "ns/x")
    # pod.go:539-548 (500m/512Mi) added to the head's own requests
    assert pod_request(head.pod_spec) == {"cpu": 2500, "memory": 8 * GIB + 512 * MIB}
    workers = kuberay.worker_pods(cluster, "ns/x")
    assert len(workers) == 2  # replicas 5 clamped to maxReplicas 2 (utils/util.go:349-350)
    # init container 200m/256Mi counts as a max with the 100m container (fit.go computePodResourceRequest)
    assert pod_request(workers[0].pod_spec) == {"cpu": 200, "memory": 256 * MIB}
    assert kuberay.worker_pods(cluster, "ns/x", [{"name": "ENABLE_INIT_CONTAINER_INJECTION", "value": "false"}])[0] \
        .pod_spec.get("initContainers") is None


def test_kuberay_upgrade_strategy_default():
    service = {"spec": {"rayClusterConfig": {}}}
    assert kuberay.upgrade_strategy(service) == "NewCluster"
    assert kuberay.upgrade_strategy(service, [{"name": "ENABLE_ZERO_DOWNTIME", "value": "false"}]) == "None"
    service["spec"]["upgradeStrategy"] = {"type": "None"}
    assert kuberay.upgrade_strategy(service) == "None"


def test_kuberay_constants_match_the_pinned_source():
    # Vendored excerpts of the operator's source at the pinned tag: a new pin needs new excerpts.
    version = pins.KUBERAY_OPERATOR_CHART_VERSION
    text = (Path(__file__).parent / "upstream" / f"kuberay-v{version}" / "pod.go.excerpt").read_text()
    wait = text[text.index('Name:            "wait-gcs-ready"'):]
    assert 'corev1.ResourceCPU:    resource.MustParse("200m")' in wait[:3000]
    assert 'corev1.ResourceMemory: resource.MustParse("256Mi")' in wait[:3000]
    autoscaler = text[text.index("func BuildAutoscalerContainer"):]
    assert 'resource.MustParse("500m")' in autoscaler and 'resource.MustParse("512Mi")' in autoscaler


# ---- the charts' defaults, against the chart sources -------------------------------------------

@pytest.mark.parametrize("chart,directory", [("nvidia-device-plugin", f"nvidia-device-plugin-{pins.NVIDIA_DEVICE_PLUGIN_CHART_VERSION}"),
                                             ("kuberay-operator", f"kuberay-operator-{pins.KUBERAY_OPERATOR_CHART_VERSION}")])
def test_vendored_chart_defaults_match_the_chart(chart, directory):
    values_file = CHART_SOURCES / directory / "values.yaml"
    if not values_file.exists():
        pytest.skip(f"{values_file} not on this machine")
    values = yaml.safe_load(values_file.read_text())
    for key, default in charts.chart_defaults()[chart]["defaults"].items():
        assert values.get(key) == default, key
    for key in ("nodeSelector", "affinity", "tolerations", "priorityClassName"):
        if key not in charts.chart_defaults()[chart]["defaults"]:
            assert not values.get(key), key


def test_operator_requests_come_from_our_values_and_the_chart_limit():
    operator = charts.kuberay_operator_pods()
    resources = operator.pod_spec["containers"][0]["resources"]
    assert resources["limits"] == {"memory": "512Mi"}  # the chart's CPU limit is deleted by our null
    assert pod_request(operator.pod_spec) == {"cpu": 100, "memory": 512 * MIB}


def test_requests_default_to_limits():
    """The API server defaults a container's missing requests to its limits (core/v1 defaults.go)."""
    assert pod_request({"containers": [{"name": "c", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}) \
        == {"cpu": 1000, "memory": GIB}


# ---- allocatable, against the vendors' published rules ---------------------------------------

@pytest.mark.parametrize("instance,max_pods,reserved_mib,reserved_cpu", [
    # nodeadm: maxPods = ENIs x (IPs per ENI - 1) + 2 (instance-info.jsonl), memory 11 x maxPods + 255 MiB,
    # CPU 6% / 1% / 0.5% / 0.25% (awslabs/amazon-eks-ami nodeadm/internal/kubelet/config.go).
    ("t3.medium", 17, 442, 70),
    ("m6i.xlarge", 58, 893, 80),
    ("g6.12xlarge", 234, 2829, 190),
    # maxPods 100 -> 1355Mi is nodeadm's own expectation (config_test.go TestKubeReservedMemoryWithUserMaxPods).
    ("p5.48xlarge", 100, 1355, 60 + 10 + 10 + 188 * 1000 * 25 // 10000),
])
def test_eks_reservations(instance, max_pods, reserved_mib, reserved_cpu):
    shape = machine("aws", instance)
    assert shape.max_pods == max_pods
    cap, alloc = capacity(shape), allocatable(shape, gpu_advertised=True)
    assert cap["memory"] - alloc["memory"] == (reserved_mib + 100) * MIB  # + evictionHard memory.available 100Mi
    assert cap["cpu"] - alloc["cpu"] == reserved_cpu == reserved_cpu_millicores(shape.vcpus)


@pytest.mark.parametrize("instance,reserved_mib,reserved_cpu", [
    # https://cloud.google.com/kubernetes-engine/docs/concepts/plan-node-sizes: 25% of the first 4 GB, 20% of
    # the next 4, 10% of the next 8, 6% of the next 112, 2% above; CPU 6% / 1% / 0.5% / 0.5% / 0.25%.
    ("e2-standard-4", 1000 + 800 + 800 + int(0.06 * 384), 80),
    ("e2-standard-8", 2600 + int(0.06 * (32768 - 16000)), 90),
    ("a2-ultragpu-4g", 2600 + 6720 + int(0.02 * (680 * 1024 - 128000)), 190),
])
def test_gke_reservations(instance, reserved_mib, reserved_cpu):
    shape = machine("gcp", instance)
    cap, alloc = capacity(shape), allocatable(shape, gpu_advertised=True)
    assert cap["memory"] - alloc["memory"] == (reserved_mib + 100) * MIB
    assert cap["cpu"] - alloc["cpu"] == reserved_cpu


# Measured nodes, published in 2i2c-org/infrastructure deployer/commands/generate/resource_allocation/
# node-capacity-info.json (capacity and allocatable in bytes, as `kubectl get node -o yaml` reports them),
# and a GKE 1.36 n2-standard-4 node's `kubectl describe node` in camunda's public benchmark notes (2026-10-08).
# (cloud, instance, vCPUs, nominal GiB, maxPods, capacity bytes, allocatable bytes, allocatable millicores)
MEASURED_NODES = [
    ("aws", "r5.xlarge", 4, 32, 4 * (15 - 1) + 2, 33164840960, 32123604992, 3920),
    ("aws", "r5.4xlarge", 16, 128, 8 * (30 - 1) + 2, 133523050496, 130451771392, 15890),
    ("gcp", "n2-highmem-4", 4, 32, 110, 33669926912, 29783904256, 3920),
    ("gcp", "n2-highmem-32", 32, 256, 110, 270473359360, 257783492608, 31850),
    ("gcp", "n1-highmem-4", 4, 26, 110, 27328200704, 23829102592, 3920),
    ("gcp", "n2-standard-4", 4, 16, 110, 16380004 * 1024, 13591652 * 1024, 3920),
]


@pytest.mark.parametrize("cloud,instance,vcpus,gib,max_pods,measured_capacity,measured_allocatable,cpu",
                         MEASURED_NODES, ids=[row[1] for row in MEASURED_NODES])
def test_reservations_reproduce_measured_nodes(cloud, instance, vcpus, gib, max_pods, measured_capacity,
                                                measured_allocatable, cpu):
    shape = MachineShape(cloud, instance, vcpus, gib, 0, None, max_pods)
    cap, alloc = capacity(shape), allocatable(shape, gpu_advertised=False)
    # The cloud's reservation (kube-reserved + eviction), exactly as the node applied it.
    assert cap["memory"] - alloc["memory"] == measured_capacity - measured_allocatable
    assert alloc["cpu"] == cpu
    # The guest memory we assume is never above what the node reported, and within 5% of it (EKS: Karpenter's
    # 7.5% estimate against the 2.8-3.5% these nodes lost).
    assert measured_capacity * 0.95 < cap["memory"] <= measured_capacity
    assert alloc["memory"] <= measured_allocatable


def test_every_gpu_shape_has_machine_facts():
    """A GPU shape added to infra/catalog/gpus.yaml without its vCPUs and memory would fail every plan."""
    from infra.catalog import gpu_catalog
    for spec in gpu_catalog().values():
        for shape in spec.shapes:
            assert machine(shape.cloud, shape.instance).gpus == shape.gpus, shape


def test_gke_e2_standard_4_allocatable():
    """3920m CPU (the review's figure) and about 13 GiB memory (review-pulumi #1: 'GKE e2-standard-4 ≈ 13 GiB')."""
    alloc = allocatable(machine("gcp", "e2-standard-4"), gpu_advertised=False)
    assert alloc["cpu"] == 3920
    assert 12.9 * GIB < alloc["memory"] < 13.1 * GIB


# ---- the gate: the plan (the real program under the offline engine) --------------------------------

def test_plan_fails_before_any_resource_on_a_placement_failure(tmp_path, capsys):
    from infra.offline.engine import REPO_ROOT, run_plan
    from infra.offline.report import placement_of
    from scripts import plan

    stack_file = yaml.safe_load((REPO_ROOT / "Pulumi.eval.yaml").read_text())
    stack_file["config"]["qwen2vl:systemInstanceType"] = "t3.medium"
    (tmp_path / "Pulumi.eval.yaml").write_text(yaml.safe_dump(stack_file))
    result = run_plan("eval", stack_dir=tmp_path)
    assert not result.ok
    assert "Placement failed for stack eval; no resource was created" in result.error
    assert [r.type for r in result.resources] == ["pulumi:pulumi:Stack"]
    placement = placement_of(result)
    assert placement["ok"] is False
    head = next(p for p in placement["pods"] if p["pod"].endswith("/head"))
    assert head["pool"] is None and head["reasons"][0].startswith("0/2 pools: system: Insufficient")

    preview = run_plan("eval", stack_dir=tmp_path, preview=True)  # `pulumi preview` takes the same path
    assert not preview.ok and "Placement failed" in preview.error
    assert [r.type for r in preview.resources] == ["pulumi:pulumi:Stack"]

    good = run_plan("eval")
    assert good.ok and placement_of(good)["ok"] is True
    assert plan.main(["--stack", "eval", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert set(document["placement"]) >= {"ok", "pods", "volumes", "upgrade"}


# ---- the twin's inputs are what the program registers ------------------------------------------

def _scheduling_view(rayservice_spec: dict) -> dict:
    """What placement reads from a RayService: every pod template's scheduling fields and the strategy."""
    cluster = rayservice_spec["rayClusterConfig"]
    templates = [cluster["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
    view = [{key: spec.get(key) for key in ("nodeSelector", "tolerations", "affinity", "volumes")}
            | {"resources": [c.get("resources") for c in spec["containers"] + spec.get("initContainers", [])]}
            for spec in templates]
    groups = [{k: g.get(k) for k in ("replicas", "minReplicas", "maxReplicas", "rayStartParams")}
              for g in cluster["workerGroupSpecs"]]
    return {"templates": view, "groups": groups, "autoscaling": cluster.get("enableInTreeAutoscaling"),
            "upgrade": rayservice_spec.get("upgradeStrategy"), "serve": rayservice_spec.get("serveConfigV2")}


@pytest.mark.parametrize("stack", ["eval", "staging"])
def test_the_twin_reads_what_the_program_registers(stack):
    """The Helm values, add-ons, StorageClasses, pools and RayService the check simulates are the ones the
    real program registers under the offline engine (no copy of them can drift)."""
    from infra.nodepool import gpu_pool_spec, system_pool_spec
    from infra.offline.engine import run_plan
    from infra.platform.addons import cluster_addons
    from infra.platform.chart_values import device_plugin_values, kube_prometheus_stack_values, kuberay_operator_values

    cfg = stack_cfg(stack)
    result = run_plan(stack)
    assert result.ok, result.error
    custom = [r for r in result.resources if r.custom]
    releases = {r.inputs["chart"]: r.inputs.get("values", {}) for r in custom if r.type == "kubernetes:helm.sh/v3:Release"}
    addons = cluster_addons(cfg)
    assert ("nvidia-device-plugin" in releases) == (not addons.provides_device_plugin)
    assert ("cluster-autoscaler" in releases) == addons.cluster_autoscaler
    if "nvidia-device-plugin" in releases:
        assert releases["nvidia-device-plugin"] == device_plugin_values(gpu_pool_spec(cfg).placement)
    assert releases["kuberay-operator"] == kuberay_operator_values(cfg.monitoring_release)
    assert ("kube-prometheus-stack" in releases) == cfg.installs_monitoring
    if cfg.installs_monitoring:
        assert releases["kube-prometheus-stack"] == kube_prometheus_stack_values(cfg.served_model_name)
    if "cluster-autoscaler" in releases:
        assert releases["cluster-autoscaler"]["resources"] == charts.cluster_autoscaler_pods(cfg.region).pod_spec[
            "containers"][0]["resources"]
    assert sorted(r.inputs["addonName"] for r in custom if r.type == "aws:eks/addon:Addon") == sorted(addons.managed_addons)
    registered_classes = {r.inputs["metadata"]["name"]: r.inputs["provisioner"] for r in custom
                          if r.type == "kubernetes:storage.k8s.io/v1:StorageClass"}
    assert registered_classes == {c["metadata"]["name"]: c["provisioner"] for c in addons.storage_classes}

    pools = {r.name.rsplit("-", 1)[-1]: r.inputs for r in custom
             if r.type in ("aws:eks/nodeGroup:NodeGroup", "gcp:container/nodePool:NodePool")}
    gpu, system = gpu_pool_spec(cfg), system_pool_spec(cfg)
    if cfg.cloud == "aws":
        assert pools[gpu.name]["labels"] == gpu.node_labels and pools[gpu.name]["instanceTypes"] == [gpu.shape.instance]
        assert pools[gpu.name]["taints"] == [gpu.cloud_taint()]
        assert pools[system.name]["instanceTypes"] == [system.instance]
    else:
        assert pools[gpu.name]["nodeConfig"]["labels"] == gpu.node_labels
        assert pools[gpu.name]["nodeConfig"]["machineType"] == gpu.shape.instance
        assert pools[gpu.name]["nodeConfig"]["taints"] == [gpu.cloud_taint()]
        assert pools[system.name]["nodeConfig"]["machineType"] == system.instance

    # The nodes the check simulates: each pool as created, grown by its autoscaler (on EKS the Cluster
    # Autoscaler discovers the system node group too) only for pods that fit nowhere else; in steady state
    # the system pool needs no growth, the GPU pool grows to what Serve's maximum needs.
    simulated = {row["pool"]: row["nodes"] for row in placement_report(cfg, objects_of(cfg)).pools}
    if cfg.cloud == "aws":
        assert simulated[system.name] == pools[system.name]["scalingConfig"]["desiredSize"]
        assert simulated[gpu.name] == pools[gpu.name]["scalingConfig"]["maxSize"]
    else:
        assert simulated[system.name] == pools[system.name]["nodeCount"] * len(pools[system.name]["nodeLocations"])
        assert simulated[gpu.name] == pools[gpu.name]["autoscaling"]["totalMaxNodeCount"]

    registered = next(r.inputs for r in custom if r.type == "kubernetes:ray.io/v1:RayService")
    assert _scheduling_view(registered["spec"]) == _scheduling_view(rayservice_of(objects_of(cfg))["spec"])


# ---- the twin against kube-scheduler: the second review's divergences T1-T7 ---------------------------

def _serve_max(objects: list[dict], replicas: int) -> list[dict]:
    objects = copy.deepcopy(objects)
    service = rayservice_of(objects)
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    config["applications"][0]["deployments"][0]["autoscaling_config"]["max_replicas"] = replicas
    service["spec"]["serveConfigV2"] = yaml.safe_dump(config, sort_keys=False)
    return objects


def test_t1_an_upgrade_is_tried_beside_the_active_cluster_at_serves_maximum():
    """Prod as it was (pool 1..2, Serve up to 2): under load the active cluster holds both GPU nodes and
    the new cluster's worker stays Pending; the twin placed the active cluster at Serve's initial replicas."""
    cfg = stack_cfg("prod", gpuNodesMin="1", gpuNodesMax="2")
    report = placement_report(cfg, _serve_max(objects_of(cfg), cfg.gpu_nodes_max))
    assert not report.upgrade["ok"]
    assert any("gpu-worker-0-pending" in r and "Insufficient nvidia.com/gpu (requests 4, free 0" in r
               for r in report.upgrade["reasons"])
    # The program sizes Serve's maximum so that the same pool keeps that room.
    assert placement_report(cfg, objects_of(cfg)).upgrade["ok"]


def test_t2_the_cluster_autoscaler_grows_the_eks_system_group_too():
    """eval with a pool of 2 chooses NewCluster: the second head needs a second m6i.xlarge, which the
    Cluster Autoscaler adds, since it discovers every managed node group by the tags EKS puts on it."""
    cfg = stack_cfg("eval", gpuNodesMax="2")
    report = check_placement(cfg, objects_of(cfg))
    assert report.upgrade["strategy"] == "NewCluster" and report.upgrade["ok"]
    assert any(r["pod"].endswith("head-pending") and r["pool"] == "system" for r in report.upgrade["pods"])
    system = next(row for row in report.pools if row["pool"] == "system")
    assert system["nodes"] == 1  # in steady state; the second node comes only for the upgrade


def test_t3_native_sidecars_are_summed():
    """An init container with restartPolicy Always runs beside the app: it is added to the sum, and to
    every later init container's use (component-helpers PodRequests)."""
    spec = {"containers": [{"name": "app", "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}}}],
            "initContainers": [
                {"name": "sidecar", "restartPolicy": "Always", "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}},
                {"name": "setup", "resources": {"requests": {"cpu": "700m", "memory": "64Mi"}}}]}
    assert pod_request(spec) == {"cpu": 950, "memory": 768 * MIB}


def test_t4_match_fields_select_a_node_by_name():
    """The DaemonSet controller pins pods with matchFields metadata.name; such a term matches that node."""
    node = Node("system-0", "system", {}, [], {"cpu": 4000, "memory": 8 * GIB, "pods": 110})
    other = Node("system-1", "system", {}, [], {"cpu": 4000, "memory": 8 * GIB, "pods": 110})
    spec = {"containers": [{"name": "c"}], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["system-0"]}]}]}}}}
    assert node_reasons(spec, {}, node) == []
    assert node_reasons(spec, {}, other) == ["didn't match Pod's node affinity/selector"]


def test_t5_the_scheduler_spreads_so_a_late_large_pod_may_not_fit():
    """Two 1-CPU pods, then a 2.5-CPU one, on two 3-CPU nodes: packing would leave a 3-CPU hole, but the
    default LeastAllocated score puts one small pod on each node and the large one stays Pending."""
    nodes = [Node(f"system-{i}", "system", {}, [], {"cpu": 3000, "memory": 8 * GIB, "pods": 110}) for i in range(2)]
    known = check.ClusterObjects.of([])

    def one(name, cpu):
        spec = {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}
        return check._schedule(check.ClusterPod(name, "Deployment", spec), nodes, {}, known)[0]

    assert one("a", "1").node != one("b", "1").node
    assert not one("large", "2500m").ok


def test_t6_serving_pods_outrank_pods_without_a_class_and_are_evicted_after_them():
    """Every cloud add-on runs at a system-critical class. The head at priority 0 was the first pod
    DefaultPreemption evicted for one; with the serving class a priority-0 pod on its node goes first."""
    from infra.workload.priority import SERVING_PRIORITY
    from infra.placement.scheduler import preemption_victims

    for stack in STACKS:
        report = placement_report(stack_cfg(stack), objects_of(stack_cfg(stack)))
        rows = {row["pod"]: row for row in report.preemption}
        assert rows and all(row["priority"] == SERVING_PRIORITY for row in rows.values()), stack
        assert 0 < SERVING_PRIORITY < check.SYSTEM_PRIORITIES["system-cluster-critical"]
    node = Node("system-0", "system", {}, [], {"cpu": 4000, "memory": 16 * GIB, "pods": 110})
    node.bind("kuberay-operator", {"cpu": 100, "memory": 512 * MIB}, 0)
    node.bind("head", {"cpu": 2500, "memory": 8704 * MIB}, SERVING_PRIORITY)
    critical = check.SYSTEM_PRIORITIES["system-cluster-critical"]
    assert preemption_victims(node, {"cpu": node.free("cpu") + 100}, critical) == ["kuberay-operator"]
    # More than the operator frees: the head goes, and the operator is reprieved (the most important first).
    assert preemption_victims(node, {"cpu": node.free("cpu") + 200}, critical) == ["head"]
    assert preemption_victims(node, {"cpu": node.free("cpu") + 100}, SERVING_PRIORITY) == ["kuberay-operator"]
    assert preemption_victims(node, {"cpu": 5000}, critical) is None


def test_t7_a_runtime_class_overhead_is_charged():
    """The RuntimeClass admission plugin copies overhead.podFixed into the pod; NodeResourcesFit adds it."""
    cfg = stack_cfg("staging")
    sandbox = {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "gvisor"},
               "handler": "runsc", "overhead": {"podFixed": {"cpu": "250m", "memory": "120Mi"}}}
    probe = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe", "namespace": "qwen2vl"},
             "spec": {"runtimeClassName": "gvisor",
                      "containers": [{"name": "c", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}
    report = placement_report(cfg, [*objects_of(cfg), sandbox, probe])
    assert pod(report, "qwen2vl/probe").requests == {"cpu": 350, "memory": 184 * MIB}
