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

MODEL_REPO = "Qwen/Qwen2-VL-72B-Instruct-AWQ"
# Short id of the commit "fix corrupted ckpt file": intermediate_size padded to 29696 and every shard
# complete. The full commit id is resolved from the hub into the model lock file.
MODEL_REVISION = "712d5a5"

SERVED_MODEL_NAME = "qwen2vl"

# The image's Python dependencies besides vLLM and Ray, where the resolver must not take the newest:
# vLLM 0.6.3.post1 runs Qwen2-VL with transformers 4.45-4.46 (5.x changed the processor API), and
# numpy 2 breaks its compiled extensions.
IMAGE_CONSTRAINTS = ("transformers==4.46.1", "numpy<2")
