"""cloud: existing leaves what the cluster already runs intact: KubeRay and the NVIDIA GPU Operator are
looked up through the cluster's API (a strict fake here) and used, refused, or installed by config."""

import pytest

import infra.run_mode
from infra import outputs, pins
from infra.config import ConfigError
from infra.offline.engine import run_plan
from infra.platform import survey
from tests.conftest import make_config, write_stack

KUBERAY = "kubernetes:helm.sh/v3:Release"


class FakeCluster:
    """The Kubernetes API as `kubectl ... -o json` answers it; any other question fails the test."""

    def __init__(self, crds=(), namespaces=(), deployments=(), daemonsets=()):
        self.answers = {
            ("get", "customresourcedefinitions"): [{"metadata": {"name": name}} for name in crds],
            ("get", "namespaces"): list(namespaces),
            ("get", "deployments", "--all-namespaces"): list(deployments),
            ("get", "daemonsets", "--all-namespaces"): list(daemonsets),
        }
        self.asked = []

    def __call__(self, args):
        key = tuple(args)
        assert key in self.answers, f"unexpected kubectl call {args}"
        self.asked.append(key)
        return {"items": self.answers[key]}


def workload(kind_namespace, name, image, node_selector=None):
    pod = {"containers": [{"name": "main", "image": image}]}
    if node_selector:
        pod["nodeSelector"] = node_selector
    return {"metadata": {"namespace": kind_namespace, "name": name}, "spec": {"template": {"spec": pod}}}


def kuberay_operator(version, namespace="ray-system"):
    return workload(namespace, "kuberay-operator", f"quay.io/kuberay/operator:v{version}")


RAY_CRDS = ("rayclusters.ray.io", "rayjobs.ray.io", "rayservices.ray.io")
GPU_OPERATOR = dict(crds=("clusterpolicies.nvidia.com",), daemonsets=[
    workload("gpu-operator", "nvidia-device-plugin-daemonset", f"nvcr.io/nvidia/k8s-device-plugin:v{pins.NVIDIA_DEVICE_PLUGIN_CHART_VERSION}")])


def existing(**raw):
    return make_config(cloud="existing", kubeContext="team-gpu", **raw)


def test_a_compatible_operator_and_the_gpu_operator_are_used_not_installed():
    fake = FakeCluster(crds=RAY_CRDS + GPU_OPERATOR["crds"],
                       deployments=[kuberay_operator(pins.KUBERAY_OPERATOR_CHART_VERSION)],
                       daemonsets=GPU_OPERATOR["daemonsets"])
    choice = survey.platform_choice(existing(), online=True, kubectl=fake)
    assert not choice.install_kuberay and not choice.install_device_plugin
    assert choice.kuberay_namespace == "ray-system" and choice.kuberay_version == pins.KUBERAY_OPERATOR_CHART_VERSION
    notes = " ".join(choice.notes)
    assert "context team-gpu runs Deployment ray-system/kuberay-operator" in notes
    assert "the NVIDIA GPU Operator (clusterpolicies.nvidia.com)" in notes


def test_an_incompatible_operator_is_refused_by_name():
    fake = FakeCluster(crds=RAY_CRDS, deployments=[kuberay_operator("1.1.0")])
    with pytest.raises(ConfigError) as info:
        survey.platform_choice(existing(), online=True, kubectl=fake)
    assert info.value.key == "kuberayOperator"
    assert "ray-system/kuberay-operator (image quay.io/kuberay/operator:v1.1.0)" in str(info.value)
    assert f"--version {pins.KUBERAY_OPERATOR_CHART_VERSION} -n ray-system" in str(info.value)


def test_an_operator_image_by_digest_is_versioned_by_its_helm_chart_label():
    operator = kuberay_operator(pins.KUBERAY_OPERATOR_CHART_VERSION)
    operator["spec"]["template"]["spec"]["containers"][0]["image"] = "quay.io/kuberay/operator@sha256:" + "a" * 64
    operator["metadata"]["labels"] = {"helm.sh/chart": f"kuberay-operator-{pins.KUBERAY_OPERATOR_CHART_VERSION}"}
    choice = survey.platform_choice(existing(), online=True, kubectl=FakeCluster(deployments=[operator]))
    assert not choice.install_kuberay and choice.kuberay_version == pins.KUBERAY_OPERATOR_CHART_VERSION


def test_install_is_refused_where_an_operator_runs():
    fake = FakeCluster(deployments=[kuberay_operator(pins.KUBERAY_OPERATOR_CHART_VERSION)])
    with pytest.raises(ConfigError, match="a second operator would reconcile the same RayServices"):
        survey.platform_choice(existing(kuberayOperator="install"), online=True, kubectl=fake)


def test_existing_is_refused_where_none_runs():
    with pytest.raises(ConfigError, match="runs no KubeRay operator"):
        survey.platform_choice(existing(kuberayOperator="existing"), online=True, kubectl=FakeCluster())
    with pytest.raises(ConfigError, match="runs no NVIDIA device plugin"):
        survey.platform_choice(existing(nvidiaDevicePlugin="existing"), online=True, kubectl=FakeCluster())


def test_a_bare_cluster_gets_both_installed_and_is_told_so():
    choice = survey.platform_choice(existing(), online=True, kubectl=FakeCluster())
    assert choice.install_kuberay and choice.install_device_plugin
    assert choice.kuberay_namespace == "kuberay-system"
    assert any("runs no KubeRay operator: the stack installs KubeRay" in note for note in choice.notes)


def test_the_stacks_own_releases_from_an_earlier_up_are_not_taken_for_the_clusters():
    own_namespace = {"metadata": {"name": "kuberay-system", "labels": {"app.kubernetes.io/part-of": "qwen2vl"}}}
    own_plugin = workload("kube-system", "nvidia-device-plugin-abc", f"nvcr.io/nvidia/k8s-device-plugin:v{pins.NVIDIA_DEVICE_PLUGIN_CHART_VERSION}",
                          {"qwen2vl.io/gpu-pool": "gpu"})
    fake = FakeCluster(crds=RAY_CRDS, namespaces=[own_namespace],
                       deployments=[kuberay_operator(pins.KUBERAY_OPERATOR_CHART_VERSION, "kuberay-system")],
                       daemonsets=[own_plugin])
    choice = survey.platform_choice(existing(), online=True, kubectl=fake)
    assert choice.install_kuberay and choice.install_device_plugin


def test_a_cluster_that_cannot_be_asked_is_refused_naming_the_context():
    def unreachable(args):
        raise survey.SurveyError("`kubectl --context team-gpu get customresourcedefinitions -o json` failed")

    with pytest.raises(ConfigError) as info:
        survey.platform_choice(existing(), online=True, kubectl=unreachable)
    assert info.value.key == "kubeContext" and "could not" in str(info.value)


def test_offline_nothing_is_asked():
    def no_cluster(args):
        raise AssertionError("the offline plan must not ask a cluster")

    assert survey.platform_choice(existing(), online=False, kubectl=no_cluster).install_kuberay


def test_existing_makes_no_sense_on_a_cluster_the_stack_creates():
    with pytest.raises(ConfigError, match="qwen2vl:kuberayOperator"):
        survey.decide(make_config(cloud="aws", region="us-east-1", gpuType="L4", kuberayOperator="existing"), None)


def test_offline_plan_says_what_up_will_look_for(plan_of):
    assert any(w.startswith("at pulumi preview/up the stack looks in kind-qwen2vl for a KubeRay operator")
               for w in plan_of("local").warnings)
    assert not any("looks in" in w for w in plan_of("eval").warnings)


def plan_against(monkeypatch, tmp_path, fake, **config):
    """The program as `pulumi up` runs it against a cluster that `fake` answers for."""
    monkeypatch.setattr(infra.run_mode, "offline_plan", lambda: False)
    monkeypatch.setattr(survey, "kubectl_json", lambda context: fake)
    stack = {"qwen2vl:kubeContext": "team-gpu", "qwen2vl:registry": "registry.example.com/ml",
             **{f"qwen2vl:{k}": v for k, v in config.items()}}
    return run_plan("team", write_stack(tmp_path, "team", stack))


def test_program_uses_the_clusters_operator_and_admits_it(monkeypatch, tmp_path):
    fake = FakeCluster(crds=RAY_CRDS + GPU_OPERATOR["crds"],
                       deployments=[kuberay_operator(pins.KUBERAY_OPERATOR_CHART_VERSION)],
                       daemonsets=GPU_OPERATOR["daemonsets"])
    result = plan_against(monkeypatch, tmp_path, fake)
    assert result.ok, result.error
    types = {r.type for r in result.resources}
    assert "qwen2vl:platform:KubeRayOperator" not in types and "qwen2vl:platform:NvidiaDevicePlugin" not in types
    assert KUBERAY not in types
    # The cluster's CRDs are read (up stops if one is missing), never applied or deleted by this stack.
    crds = [r for r in result.resources if r.type == "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition"]
    assert crds and all(r.read for r in crds)
    assert "existing-crd-rayservices.ray.io" in {r.name for r in crds}
    assert result.outputs[outputs.PLATFORM]["kuberayNamespace"] == "ray-system"
    policies = [r.inputs for r in result.resources if r.type == "kubernetes:networking.k8s.io/v1:NetworkPolicy"]
    assert "ray-system" in str(policies) and "kuberay-system" not in str(policies)


def test_program_refuses_an_incompatible_operator_before_any_resource(monkeypatch, tmp_path):
    result = plan_against(monkeypatch, tmp_path, FakeCluster(deployments=[kuberay_operator("1.2.2")]))
    assert not result.ok and "qwen2vl:kuberayOperator" in result.error and "v1.2.2" in result.error
    assert [r.type for r in result.resources] == ["pulumi:pulumi:Stack"]
