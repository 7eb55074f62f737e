"""What the monitoring objects and the KubeRay CRDs need from the cluster: a stack that turns monitoring on
installs the Prometheus operator where it owns the cluster and checks for its CRDs where it does not; the
KubeRay CRDs follow the operator's version; the operator's and the RayService's state reach Prometheus."""

from __future__ import annotations

import json

import pytest

from infra import pins
from infra.offline.engine import run_plan
from infra.placement import check_placement
from infra.placement.charts import kuberay_operator_pods, monitoring_stack_pods
from infra.platform import kuberay_crds as crds_module
from infra.platform.chart_values import kube_prometheus_stack_values, kuberay_operator_values
from infra.platform.names import PROMETHEUS_OPERATOR_CRDS, PROMETHEUS_RELEASE_LABEL
from infra.observability.dashboard import SIDECAR_LABEL
from infra.workload.manifests import workload_spec
from infra.workload.monitoring import MONITORING_KINDS
from infra.workload.objects import workload_objects
from scripts import vendor_kuberay_crds
from tests.conftest import REPO_ROOT, make_config, write_stack

RELEASE = "kubernetes:helm.sh/v3:Release"
CRD = "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition"


def by_name(plan):
    return {r.name: r for r in plan.resources}


# ---- N1: the Prometheus operator where monitoring is on ------------------------------------------------

@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_a_stack_that_makes_its_cluster_installs_the_monitoring_stack_before_the_monitors(plan_of, stack):
    resources = by_name(plan_of(stack))
    release = resources["kube-prometheus-stack"]
    assert release.type == RELEASE
    assert release.inputs["chart"] == pins.KUBE_PROMETHEUS_STACK_CHART
    assert release.inputs["version"] == pins.KUBE_PROMETHEUS_STACK_CHART_VERSION
    # The Prometheus selects release=<the Helm release name>: the name must be exact, not auto-named.
    assert release.inputs["name"] == "kube-prometheus-stack"
    assert release.inputs["values"]["crds"]["enabled"] is True
    # Every monitoring object waits for the operator's CRDs (through the workload namespace, or directly).
    # The operator's ServiceMonitor comes with its release, after its namespace, after the monitoring stack.
    assert f"{RELEASE}::kube-prometheus-stack" in resources["kuberay-namespace"].depends_on
    assert "kubernetes:core/v1:Namespace::kuberay-namespace" in resources["kuberay-operator"].depends_on
    assert f"{RELEASE}::kuberay-operator" in resources["namespace-qwen2vl"].depends_on
    for kind in MONITORING_KINDS:
        monitor = next(r for r in resources.values() if r.type == f"kubernetes:monitoring.coreos.com/v1:{kind}")
        assert monitor.inputs["metadata"]["labels"][PROMETHEUS_RELEASE_LABEL] == release.inputs["name"]


def test_the_offline_engine_refuses_a_custom_resource_whose_crd_nobody_provides():
    """The plan sees what a real cluster refuses ("no matches for kind"): the old program, monitors on a fresh
    cluster with nothing installing the Prometheus operator, no longer plans. Every committed stack plans, so
    the program provides each CRD before the first object of its kind (test_plan)."""
    from pulumi.runtime.mocks import MockResourceArgs
    from infra.offline.mocks import StrictMocks, UnmockedCall

    def register(mocks, typ, name, inputs, resource_id=None):
        return mocks.new_resource(MockResourceArgs(typ, name, inputs, resource_id=resource_id, custom=True))

    monitor = ("kubernetes:monitoring.coreos.com/v1:PodMonitor", "podmonitor-qwen2vl-ray", {"metadata": {}})
    with pytest.raises(UnmockedCall, match="podmonitors.monitoring.coreos.com"):
        register(StrictMocks(), *monitor)
    with pytest.raises(UnmockedCall, match="rayservices.ray.io"):
        mocks = StrictMocks()
        register(mocks, RELEASE, "kuberay-operator", {"chart": "kuberay-operator", "skipCrds": True})
        register(mocks, "kubernetes:ray.io/v1:RayService", "rayservice-qwen2vl", {"metadata": {}})
    installed = StrictMocks()
    register(installed, RELEASE, "kube-prometheus-stack", {"chart": "kube-prometheus-stack"})
    register(installed, *monitor)
    read = StrictMocks()
    register(read, CRD, "required-podmonitors", {}, resource_id="podmonitors.monitoring.coreos.com")
    register(read, *monitor)


def test_monitors_carry_the_label_that_the_default_prometheus_selects():
    cfg = make_config(prometheusOperator=True, prometheusRelease="monitoring-stack")
    objects = [o for o in workload_objects(workload_spec(cfg)) if o["kind"] in MONITORING_KINDS]
    assert {o["kind"] for o in objects} == set(MONITORING_KINDS)
    assert all(o["metadata"]["labels"][PROMETHEUS_RELEASE_LABEL] == "monitoring-stack" for o in objects)
    # The operator's ServiceMonitor (chart template: selector -> labels) carries the same label.
    monitor = kuberay_operator_values("monitoring-stack")["metrics"]["serviceMonitor"]
    assert monitor["enabled"] and monitor["selector"] == {PROMETHEUS_RELEASE_LABEL: "monitoring-stack"}
    assert "metrics" not in kuberay_operator_values(None)


def test_grafana_loads_the_dashboard_config_map_by_its_label():
    dashboards = kube_prometheus_stack_values("qwen2vl")["grafana"]["sidecar"]["dashboards"]
    assert dashboards["enabled"] and dashboards["searchNamespace"] == "ALL"
    assert {dashboards["label"]: dashboards["labelValue"]} == SIDECAR_LABEL


def test_an_existing_cluster_reads_the_crds_and_installs_nothing(tmp_path):
    write_stack(tmp_path, "mine", {"qwen2vl:cloud": "existing", "qwen2vl:image": "registry.example.com/ml/q:1",
                                   "qwen2vl:prometheusOperator": "true"})
    plan = run_plan("mine", tmp_path)
    assert plan.ok, plan.error
    assert not any(r.type == RELEASE and r.name == "kube-prometheus-stack" for r in plan.resources)
    assert {r.inputs["id"] for r in plan.resources if r.type == CRD and r.read} == set(PROMETHEUS_OPERATOR_CRDS)
    monitoring = plan.outputs["monitoring"]
    assert "prometheusOperator false" in monitoring and "kube-prometheus-stack" in monitoring
    operator_namespace = by_name(plan)["kuberay-namespace"]
    assert {f"{CRD}::required-{crd}" for crd in PROMETHEUS_OPERATOR_CRDS} <= set(operator_namespace.depends_on)


def test_the_twin_places_the_monitoring_pods():
    pods = {p.name: p for p in monitoring_stack_pods("monitoring")}
    assert set(pods) == {f"monitoring/{n}" for n in ("prometheus-operator", "prometheus", "alertmanager", "grafana",
                                                     "kube-state-metrics", "node-exporter")}
    # node-exporter tolerates every NoSchedule taint (chart default): it lands on the GPU nodes too.
    assert pods["monitoring/node-exporter"].kind == "DaemonSet"
    assert {"effect": "NoSchedule", "operator": "Exists"} in pods["monitoring/node-exporter"].pod_spec["tolerations"]
    # Prometheus with its config-reloader: both containers' requests count.
    assert [c["name"] for c in pods["monitoring/prometheus"].pod_spec["containers"]] == ["prometheus", "config-reloader"]
    cfg = make_config(cloud="gcp", region="us-central1", gcpProject="my-gpu-project", gpuType="A100-80GB",
                      prometheusOperator=True)
    placed = {p["pod"]: p for p in check_placement(cfg, workload_objects(workload_spec(cfg))).as_dict()["pods"]}
    assert placed["monitoring/prometheus"]["pool"] == "system" and not placed["monitoring/prometheus"]["reasons"]
    assert placed["monitoring/prometheus"]["requests"] == {"cpu": "210m", "memory": "1.0Gi"}
    assert placed["monitoring/node-exporter"]["pool"] == "system, gpu"


# ---- item 6: the KubeRay CRDs at the operator's version --------------------------------------------------

def test_the_chart_installs_no_crds_and_the_operator_waits_for_the_programs_own(plan_of):
    resources = by_name(plan_of("eval"))
    operator = resources["kuberay-operator"]
    assert operator.inputs["skipCrds"] is True
    crds = [r for r in resources.values() if r.type == CRD and not r.read]
    assert {r.inputs["metadata"]["name"] for r in crds} == {"rayclusters.ray.io", "rayjobs.ray.io", "rayservices.ray.io"}
    assert all(f"{CRD}::{r.name}" in operator.depends_on for r in crds)
    # Deleting a CRD deletes every object of its kind: a destroy leaves them.
    assert all(r.retain_on_delete for r in crds)
    assert all(r.inputs["metadata"]["labels"]["app.kubernetes.io/version"] == pins.KUBERAY_OPERATOR_CHART_VERSION
               for r in crds)


def test_a_version_bump_applies_that_versions_crds(tmp_path, monkeypatch):
    current = crds_module.kuberay_crds()
    bumped = tmp_path / "v9.9.9"
    bumped.mkdir()
    crd = json.loads((crds_module.crd_folder() / "ray.io_rayservices.json").read_text())
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["newField"] = {"type": "string"}
    (bumped / "ray.io_rayservices.json").write_text(json.dumps(crd))
    monkeypatch.setattr(crds_module, "CRD_FOLDER", tmp_path)
    new = crds_module.kuberay_crds("9.9.9")
    assert [c["metadata"]["labels"]["app.kubernetes.io/version"] for c in new] == ["9.9.9"]
    assert new[0]["spec"] != next(c for c in current if c["metadata"]["name"] == "rayservices.ray.io")["spec"]
    with pytest.raises(FileNotFoundError, match="v1.2.3.*vendor_kuberay_crds.py"):
        crds_module.kuberay_crds("1.2.3")


def test_the_vendored_crds_are_the_pinned_releases(tmp_path):
    """What scripts/vendor_kuberay_crds.py makes of the release's files (../shared/kuberay-crds, as CI lays
    it out beside the clone) is, byte for byte, what the program applies."""
    release = REPO_ROOT.parent / "shared" / "kuberay-crds" / f"v{pins.KUBERAY_OPERATOR_CHART_VERSION}"
    written = vendor_kuberay_crds.vendor(release, pins.KUBERAY_OPERATOR_CHART_VERSION, into=tmp_path)
    ours = sorted(crds_module.crd_folder().glob("*.json"))
    assert [path.name for path in written] == [path.name for path in ours] == [
        "ray.io_rayclusters.json", "ray.io_rayjobs.json", "ray.io_rayservices.json"]
    for made, committed in zip(written, ours):
        assert made.read_bytes() == committed.read_bytes(), committed.name


# ---- m8: the operator's CPU limit ------------------------------------------------------------------------

def test_the_operator_runs_without_the_charts_cpu_limit():
    resources = kuberay_operator_pods().pod_spec["containers"][0]["resources"]
    assert "cpu" not in resources["limits"] and resources["limits"]["memory"] == "512Mi"


# ---- item 10: the RayService's state reaches Prometheus ----------------------------------------------------

@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_the_operator_and_the_rayservice_status_are_scraped_where_monitoring_is_on(plan_of, stack):
    resources = by_name(plan_of(stack))
    monitor = resources["kuberay-operator"].inputs["values"]["metrics"]["serviceMonitor"]
    assert monitor["enabled"] is True and monitor["selector"] == {PROMETHEUS_RELEASE_LABEL: "kube-prometheus-stack"}
    ksm = resources["kube-prometheus-stack"].inputs["values"]["kube-state-metrics"]
    assert ksm["customResourceState"]["enabled"] is True
    (resource,) = ksm["customResourceState"]["config"]["spec"]["resources"]
    assert resource["groupVersionKind"] == {"group": "ray.io", "version": "v1", "kind": "RayService"}
    path = resource["metrics"][0]["each"]["stateSet"]["path"]
    assert path == ["status", "activeServiceStatus", "applicationStatuses", "qwen2vl", "status"]
    assert {"apiGroups": ["ray.io"], "resources": ["rayservices"], "verbs": ["list", "watch"]} in ksm["rbac"]["extraRules"]


def test_the_eval_stack_without_monitoring_scrapes_nothing(plan_of):
    resources = by_name(plan_of("eval"))
    assert "metrics" not in resources["kuberay-operator"].inputs["values"]
    assert "kube-prometheus-stack" not in resources
