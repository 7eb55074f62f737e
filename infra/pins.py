"""Every version and pin the project depends on, in one place.

Nothing else in the repository spells these values out; `tests/test_pins.py` fails when a file does.
Stack config may override the serving pins (`vllmVersion`, `modelRepo`, `modelRevision`); the defaults
are the combination this project has checked end to end.
"""

# vLLM 0.6.3.post1 is the last release whose wheels are built entirely on CUDA 12.1 (torch 2.4.0);
# 0.6.4 moved to torch 2.5.1 and a CUDA 12.4 runtime.
CUDA_VERSION = "12.1"
TORCH_VERSION = "2.4.0"
VLLM_VERSION = "0.6.3.post1"
# KubeRay 1.3/1.4 support Ray >= 2.38; vLLM 0.6.x needs Ray >= 2.9.
RAY_VERSION = "2.38.0"
PYTHON_VERSION = "3.11"

# The CUDA base without cuDNN: torch 2.4.0 brings its own cuDNN 9 and CUDA 12.1 libraries as pip wheels
# (nvidia-cudnn-cu12 "via torch" in images/vllm/requirements.lock), so cudnn8-runtime's ~1 GB went unused.
# Pinned by digest, because NVIDIA deletes end-of-life tags. The digest is the one Docker resolved this tag
# to in a public build log (github.com/briancaffey/RedLM, services/qwen2-vl/README.md), and nvcr.io serves
# the same digest for it in a second public Dockerfile; a wrong digest cannot pull another image, it fails.
CUDA_BASE_IMAGE = (
    "nvidia/cuda:12.1.1-base-ubuntu22.04@sha256:457a4076c56025f51217bff647ca631c7880ad3dbf546b03728ba98297ebbc22"
)

KUBERAY_OPERATOR_CHART = "kuberay-operator"
KUBERAY_OPERATOR_CHART_VERSION = "1.4.2"
KUBERAY_HELM_REPO = "https://ray-project.github.io/kuberay-helm/"

NVIDIA_DEVICE_PLUGIN_CHART = "nvidia-device-plugin"
NVIDIA_DEVICE_PLUGIN_CHART_VERSION = "0.17.0"
NVIDIA_DEVICE_PLUGIN_HELM_REPO = "https://nvidia.github.io/k8s-device-plugin"

# Cluster Autoscaler (EKS only; GKE runs its own): chart 9.59.0 ships Cluster Autoscaler 1.35.0, the minor of
# the default kubernetesVersion (kubermatic/kubermatic#16253: "cluster-autoscaler chart 9.59.0 (appVersion
# 1.35.0)"; kubernetes/autoscaler#9193). CA's minor should match the cluster's.
CLUSTER_AUTOSCALER_CHART = "cluster-autoscaler"
CLUSTER_AUTOSCALER_CHART_VERSION = "9.59.0"
CLUSTER_AUTOSCALER_APP_VERSION = "1.35.0"  # the chart's appVersion, read by infra/clusters/__init__.py
CLUSTER_AUTOSCALER_HELM_REPO = "https://kubernetes.github.io/autoscaler"

# kube-prometheus-stack (the Prometheus operator with its CRDs, Prometheus, Alertmanager, Grafana,
# kube-state-metrics, node-exporter), installed where monitoring is on and the stack owns the cluster. Chart
# 88.5.3 ships prometheus-operator v0.93.1 (its Chart.yaml appVersion); values read at the tag
# kube-prometheus-stack-88.5.3 of github.com/prometheus-community/helm-charts (infra/platform/chart_values.py).
KUBE_PROMETHEUS_STACK_CHART = "kube-prometheus-stack"
KUBE_PROMETHEUS_STACK_CHART_VERSION = "88.5.3"
KUBE_PROMETHEUS_STACK_HELM_REPO = "https://prometheus-community.github.io/helm-charts"

MODEL_REPO = "Qwen/Qwen2-VL-72B-Instruct-AWQ"
# Short id of the commit "fix corrupted ckpt file": intermediate_size padded to 29696 and every shard
# complete. The full commit id is resolved from the hub into the model lock file.
MODEL_REVISION = "712d5a5"

SERVED_MODEL_NAME = "qwen2vl"

# The image lock belongs to its engine's era: the resolver sees only files uploaded before this instant
# (uv's --exclude-newer), the day after the later of the two engine pins reached the package index
# (vllm-0.6.3.post1 wheel 2024-10-17T18:04Z, ray-2.38.0 cp311 wheels 2024-10-23T19:28Z, upload times of
# PyPI's simple API). Resolved against today's index instead, the lock took web and data packages years
# newer than the engine (fastapi 0.165, pyarrow 26, openai 3.x), and the Serve app did not come up on Ray 2.38.
IMAGE_LOCK_EXCLUDE_NEWER = "2024-10-24T00:00:00Z"
# Packages the resolver may take from after the cut-off, each with its own later cut-off and the reason.
IMAGE_LOCK_LATE_PACKAGES = {
    # The release this project checked Qwen2-VL's processor against (smart_resize, image token counts);
    # uploaded 2024-10-29, six days after Ray 2.38.0. vLLM 0.6.3.post1 asks for transformers>=4.45.2.
    "transformers": "2024-10-30T00:00:00Z",
    # outlines 0.0.46 (a vLLM 0.6.3.post1 dependency) needs it; its only file on the index today is a
    # re-upload of 2025-09-25 (the 2024 upload was deleted), and it is pure data.
    "pyairports": "2025-09-26T00:00:00Z",
}

# Bounds the resolver must keep besides vLLM and Ray, where a package's metadata does not state what it
# needs at run time:
# - transformers: vLLM 0.6.3.post1 runs Qwen2-VL with 4.45-4.46 (5.x changed the processor API);
# - numpy<2: vLLM 0.6.3.post1's compiled extensions and torch 2.4.0 are built against NumPy 1.x;
# - pyarrow<18: Ray 2.38's serializer imports pyarrow in every Serve process; pyarrow's metadata names no
#   NumPy bound, yet later majors are built for NumPy 2 and some refuse NumPy 1.x at import (26.0.1:
#   "pyarrow requires NumPy 2.0 or newer", so the Serve controller never started). 17.x is the era's
#   release and loads beside numpy 1.26 (tests/test_image_env.py imports it).
IMAGE_CONSTRAINTS = ("transformers==4.46.1", "numpy<2", "pyarrow<18")
