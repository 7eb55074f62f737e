"""Stack output names: an API shared by the program, scripts/ and tests."""

PREFLIGHT = "preflight"
PLACEMENT = "placement"
HOURLY_COST_USD = "hourlyCostUsd"
CAPACITY = "capacity"
CLUSTER_NAME = "clusterName"
KUBECONFIG = "kubeconfig"
GPU_POOL = "gpuPool"
# The zones the cluster was placed in, and why (infra/nodepool.py eks_zone_choice, gke_zone_choice).
CLUSTER_ZONES = "clusterZones"
OPERATOR_VERSION = "kuberayOperatorVersion"
# What the stack installed on the cluster, and what it found there and used instead (infra/platform/survey.py).
PLATFORM = "platform"
NAMESPACE = "namespace"
ENDPOINT = "endpoint"
# The commands that reach the endpoint from a workstation (infra/workload/access.py).
ACCESS = "access"
SERVED_MODEL = "servedModel"
MODEL = "model"
IMAGE = "image"
API_KEY = "apiKey"
SMOKE_REPORT = "smokeReport"
MONITORING = "monitoring"
