"""What an existing cluster already runs, and so what this stack installs there (no Pulumi import).

On `cloud: existing` the stack would otherwise always install a cluster-wide KubeRay operator (with
its CRDs) and an NVIDIA device plugin, which clash with a cluster that runs KubeRay or the NVIDIA GPU
Operator already: two operators reconcile the same RayServices, two device plugins register the same
`nvidia.com/gpu` resource with the kubelet. So at `pulumi preview`/`up` the program looks through the
cluster's API (kubectl, with the stack's kubeContext) and decides with the config keys
kuberayOperator and nvidiaDevicePlugin (auto, install, existing). The offline plan cannot reach a
cluster; it says what will be looked for.

`survey` reads through a `Kubectl` seam (arguments -> the parsed `-o json` answer), so tests answer it
with a fake API; `decide` is pure.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from typing import Callable, Sequence

from infra import pins
from infra.config import PROJECT, ConfigError, StackConfig
from infra.nodepool import GPU_POOL_LABEL
from infra.platform.addons import cluster_addons
from infra.platform.names import KUBERAY_OPERATOR_NAMESPACE

Kubectl = Callable[[Sequence[str]], dict]

KUBERAY_GROUP = "ray.io"
# The NVIDIA GPU Operator's CRD; where it runs, the operator manages the device plugin DaemonSet itself.
GPU_OPERATOR_CRD = "clusterpolicies.nvidia.com"
# Images of the device plugins: NVIDIA's (its Helm chart and the GPU Operator) and GKE's own.
DEVICE_PLUGIN_IMAGES = ("k8s-device-plugin", "nvidia-gpu-device-plugin")
KUBERAY_OPERATOR_IMAGE = "kuberay/operator"
# The label KubeRayOperator puts on the namespace it creates (infra/platform/kuberay.py): that operator
# is this stack's own from an earlier `up`, not the cluster's.
OWN_NAMESPACE_LABEL = ("app.kubernetes.io/part-of", PROJECT)
VERSION_TAG = re.compile(r"^v?([0-9]+)\.([0-9]+)\.([0-9]+)")


class SurveyError(Exception):
    """The cluster could not be asked (kubectl missing, context unknown, API unreachable)."""


@dataclass(frozen=True)
class Found:
    """A Deployment or DaemonSet found in the cluster."""

    kind: str
    namespace: str
    name: str
    image: str
    version: str | None = None

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name} (image {self.image})"


@dataclass(frozen=True)
class ClusterSurvey:
    context: str
    kuberay_crds: tuple[str, ...] = ()
    kuberay_operators: tuple[Found, ...] = ()
    gpu_operator: bool = False
    device_plugins: tuple[Found, ...] = ()


@dataclass(frozen=True)
class PlatformChoice:
    """What the stack installs, and what it found and uses instead."""

    install_kuberay: bool
    kuberay_namespace: str
    kuberay_version: str
    install_device_plugin: bool
    notes: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict:
        return {"installKuberayOperator": self.install_kuberay, "kuberayNamespace": self.kuberay_namespace,
                "kuberayVersion": self.kuberay_version, "installDevicePlugin": self.install_device_plugin,
                "notes": list(self.notes)}


def kubectl_json(context: str | None, timeout: float = 60.0) -> Kubectl:
    """The real seam: `kubectl [--context C] ARGS -o json`, with the machine's kubeconfig and credentials."""

    def run(args: Sequence[str]) -> dict:
        command = ["kubectl", *(["--context", context] if context else []), *args, "-o", "json"]
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise SurveyError(f"`{' '.join(command)}` did not run: {error}") from None
        if proc.returncode != 0:
            raise SurveyError(f"`{' '.join(command)}` failed: {proc.stderr.strip().splitlines()[-1:]}")
        return json.loads(proc.stdout)

    return run


def _containers(obj: dict) -> list[dict]:
    return obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])


def _version(image: str) -> str | None:
    tag = image.rsplit("/", 1)[-1].partition("@")[0].partition(":")[2]
    match = VERSION_TAG.match(tag)
    return ".".join(match.groups()) if match else None


def survey(kubectl: Kubectl, context: str) -> ClusterSurvey:
    """Reads CRDs, namespaces, Deployments and DaemonSets, and picks out KubeRay and the NVIDIA pieces."""
    crds = [item["metadata"]["name"] for item in kubectl(["get", "customresourcedefinitions"])["items"]]
    own_namespaces = {
        item["metadata"]["name"] for item in kubectl(["get", "namespaces"])["items"]
        if (item["metadata"].get("labels") or {}).get(OWN_NAMESPACE_LABEL[0]) == OWN_NAMESPACE_LABEL[1]
    }
    operators = []
    for item in kubectl(["get", "deployments", "--all-namespaces"])["items"]:
        meta = item["metadata"]
        if meta["namespace"] in own_namespaces:
            continue
        for container in _containers(item):
            if KUBERAY_OPERATOR_IMAGE in container.get("image", ""):
                # An image by digest alone has no tag: the chart's label helm.sh/chart (kuberay-operator-1.4.2,
                # templates/_helpers.tpl of the pinned chart, whose Chart.yaml has no appVersion) names it.
                chart = (meta.get("labels") or {}).get("helm.sh/chart", "")
                version = _version(container["image"]) or _version(":" + chart.rpartition("-")[2])
                operators.append(Found("Deployment", meta["namespace"], meta["name"], container["image"], version))
    plugins = []
    for item in kubectl(["get", "daemonsets", "--all-namespaces"])["items"]:
        meta = item["metadata"]
        pod_spec = item.get("spec", {}).get("template", {}).get("spec", {})
        if GPU_POOL_LABEL in (pod_spec.get("nodeSelector") or {}):
            continue  # this stack's own release from an earlier `up` (chart_values.device_plugin_values)
        for container in _containers(item):
            if any(name in container.get("image", "") for name in DEVICE_PLUGIN_IMAGES):
                plugins.append(Found("DaemonSet", meta["namespace"], meta["name"], container["image"]))
    return ClusterSurvey(
        context=context,
        kuberay_crds=tuple(sorted(name for name in crds if name.endswith(f".{KUBERAY_GROUP}"))),
        kuberay_operators=tuple(operators),
        gpu_operator=GPU_OPERATOR_CRD in crds,
        device_plugins=tuple(plugins),
    )


def compatible(version: str | None) -> bool:
    """The workload's RayService is written for, and checked against the CRDs of, the pinned KubeRay
    release (tests validate it against /work/shared/kuberay-crds at that version): same major and minor."""
    pinned = pins.KUBERAY_OPERATOR_CHART_VERSION.split(".")[:2]
    return version is not None and version.split(".")[:2] == pinned


def _kuberay(cfg: StackConfig, found: ClusterSurvey | None) -> tuple[bool, str, str, list[str]]:
    mode, pinned = cfg.kuberay_operator, pins.KUBERAY_OPERATOR_CHART_VERSION
    fix_existing = f"`pulumi config set {PROJECT}:kuberayOperator existing --stack {cfg.stack}`"
    if found is None:
        if mode == "existing":
            return False, KUBERAY_OPERATOR_NAMESPACE, pinned, [
                "kuberayOperator existing: the KubeRay operator is looked up at preview/up"]
        return True, KUBERAY_OPERATOR_NAMESPACE, pinned, []
    where = f"context {found.context}"
    if len(found.kuberay_operators) > 1:
        raise ConfigError("kuberayOperator", mode, f"{where} runs {len(found.kuberay_operators)} KubeRay operators "
                          f"({'; '.join(map(str, found.kuberay_operators))}), which reconcile the same RayServices; "
                          "remove all but one", cfg.stack, "existing")
    if not found.kuberay_operators:
        if mode == "existing":
            raise ConfigError("kuberayOperator", mode, f"{where} runs no KubeRay operator (no Deployment with a "
                              f"{KUBERAY_OPERATOR_IMAGE} image)", cfg.stack, "install")
        crds = f"; its ray.io CRDs ({', '.join(found.kuberay_crds)}) stay as they are" if found.kuberay_crds else ""
        return True, KUBERAY_OPERATOR_NAMESPACE, pinned, [
            f"{where} runs no KubeRay operator: the stack installs KubeRay {pinned}{crds}"]
    operator = found.kuberay_operators[0]
    if mode == "install":
        raise ConfigError("kuberayOperator", mode, f"{where} already runs {operator}; a second operator would "
                          "reconcile the same RayServices", cfg.stack, fix=fix_existing)
    if not compatible(operator.version):
        raise ConfigError("kuberayOperator", mode, f"{where} runs {operator}, and this stack's RayService is "
                          f"written and checked for KubeRay {'.'.join(pinned.split('.')[:2])}.x; change that "
                          f"operator to {pinned}, or deploy to a cluster without one", cfg.stack,
                          fix=f"`helm upgrade <its release> {pins.KUBERAY_OPERATOR_CHART} "
                              f"--repo {pins.KUBERAY_HELM_REPO} --version {pinned} -n {operator.namespace}`")
    return False, operator.namespace, operator.version or pinned, [
        f"{where} runs {operator}: the stack uses it and installs no KubeRay operator"]


def _device_plugin(cfg: StackConfig, found: ClusterSurvey | None) -> tuple[bool, list[str]]:
    mode = cfg.nvidia_device_plugin
    if cluster_addons(cfg).provides_device_plugin:
        return False, []
    if found is None:
        if mode == "existing":
            return False, ["nvidiaDevicePlugin existing: the cluster's device plugin is looked up at preview/up"]
        return True, []
    where = f"context {found.context}"
    theirs = [str(plugin) for plugin in found.device_plugins]
    if found.gpu_operator:
        theirs.insert(0, f"the NVIDIA GPU Operator ({GPU_OPERATOR_CRD})")
    if not theirs:
        if mode == "existing":
            raise ConfigError("nvidiaDevicePlugin", mode, f"{where} runs no NVIDIA device plugin and no GPU Operator",
                              cfg.stack, "install")
        return True, [f"{where} runs no NVIDIA device plugin: the stack installs it"]
    if mode == "install":
        raise ConfigError("nvidiaDevicePlugin", mode, f"{where} already runs {'; '.join(theirs)}; a second device "
                          "plugin would register nvidia.com/gpu with the kubelet again", cfg.stack, "existing")
    return False, [f"{where} runs {'; '.join(theirs)}: the stack installs no device plugin"]


def decide(cfg: StackConfig, found: ClusterSurvey | None) -> PlatformChoice:
    """What to install, from the config and what the cluster runs (`found`; None = not looked up)."""
    if cfg.cloud != "existing":
        for key, value in (("kuberayOperator", cfg.kuberay_operator), ("nvidiaDevicePlugin", cfg.nvidia_device_plugin)):
            if value == "existing":
                raise ConfigError(key, value, f"a cluster this stack creates (cloud {cfg.cloud}) runs nothing of "
                                  "its own to use", cfg.stack, "auto")
        found = None
    install_kuberay, namespace, version, kuberay_notes = _kuberay(cfg, found)
    install_plugin, plugin_notes = _device_plugin(cfg, found)
    return PlatformChoice(install_kuberay, namespace, version, install_plugin, tuple(kuberay_notes + plugin_notes))


def offline_note(cfg: StackConfig) -> str | None:
    """What the offline plan, which reaches no cluster, says the real preview/up will look for."""
    if cfg.cloud != "existing":
        return None
    context = cfg.kube_context or "the current kubectl context"
    return (f"at pulumi preview/up the stack looks in {context} for a KubeRay operator (ray.io CRDs, a "
            f"{KUBERAY_OPERATOR_IMAGE} Deployment and its version), the NVIDIA GPU Operator ({GPU_OPERATOR_CRD}) "
            "and device plugin DaemonSets, and uses what it finds (kuberayOperator "
            f"{cfg.kuberay_operator}, nvidiaDevicePlugin {cfg.nvidia_device_plugin}); this plan assumes none")


def platform_choice(cfg: StackConfig, online: bool, kubectl: Kubectl | None = None) -> PlatformChoice:
    """`decide` with what the cluster runs, looked up when `online` (a real preview or up) on an existing
    cluster; without `online` nothing is looked up and the choice is the plan's assumption."""
    if not online or cfg.cloud != "existing":
        return decide(cfg, None)
    context = cfg.kube_context or "(current context)"
    try:
        found = survey(kubectl or kubectl_json(cfg.kube_context), context)
    except SurveyError as error:
        raise ConfigError("kubeContext", cfg.kube_context, f"the stack looks at what the cluster already runs "
                          f"before installing cluster-wide components, and could not: {error}", cfg.stack,
                          "kind-qwen2vl") from None
    return decide(cfg, found)
