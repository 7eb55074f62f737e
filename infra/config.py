"""Typed stack configuration: every key, its type, default, one-line doc and validation.

`KEYS` is the single list of config keys (docs/config.md is generated from it). `parse_stack_config`
is pure: it turns the raw strings of a stack's config into a `StackConfig` or raises `ConfigError`,
before the program registers any resource. Secrets are read separately (`read_secrets`) and stay
Pulumi `Output` secrets.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from infra import pins
from infra import catalog
from infra.preflight.ingress_limits import LIMITS
from infra.preflight.kernels import QUANTIZATION_CHOICES

PROJECT = "qwen2vl"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|K|M|G|T|P)?$")
REVISION = re.compile(r"^[0-9a-f]{7,40}$")
K8S_MINOR = re.compile(r"^1\.[0-9]{2}$")
VERSION = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+([.+-]?[0-9A-Za-z.]+)?$")
REGION = re.compile(r"^[a-z]{2,}(-[a-z0-9]+){1,3}$")
REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
IMAGE_REF = re.compile(r"^[a-z0-9][a-z0-9._/:-]*(@sha256:[0-9a-f]{64})?$")
HOSTNAME = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)+[a-z]{2,}$")
TAG_VALUE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")
SECRET_KEYS = ("apiKey", "hubToken")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?$")
REDIS_ADDRESS = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?:[0-9]{1,5}$")
# Ingress classes whose load balancer the stack configures (infra/workload/network.py).
INGRESS_CLASSES = ("gce",)
# Where a GPU worker keeps its model copy (infra/workload/storage.py).
MODEL_STORAGE_CHOICES = ("ephemeral", "readWriteMany", "image")
# Whether the stack installs a cluster-wide component or uses the cluster's own (infra/platform/survey.py).
INSTALL_CHOICES = ("auto", "install", "existing")
# Keys a stack must set: without `cloud` a stack would deploy to whatever cluster kubectl points at.
REQUIRED_KEYS = ("cloud",)


class ConfigError(ValueError):
    """A stack config value the program cannot use. The message names the key and the fix."""

    def __init__(
        self, key: str, value: Any, allowed: str, stack: str, example: str | None = None, fix: str | None = None,
        namespace: str = PROJECT,
    ) -> None:
        self.key = key
        self.value = value
        shown = "(not set)" if value is None else repr(value)
        fix_value = example if example is not None else "<value>"
        fix = fix or f"`pulumi config set {PROJECT}:{key} {fix_value} --stack {stack}`"
        super().__init__(
            f"Stack config {namespace}:{key} = {shown} is not valid: {allowed}. "
            f"Fix it with {fix} or edit Pulumi.{stack}.yaml."
        )


@dataclass(frozen=True)
class Key:
    """One config key: `parse` turns the raw string into a typed value or raises ValueError(allowed)."""

    name: str
    doc: str
    parse: Callable[[str], Any]
    default: Any
    example: str
    allowed: str


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        if not re.fullmatch(r"-?[0-9]+", raw.strip()):
            raise ValueError
        value = int(raw)
        if not low <= value <= high:
            raise ValueError
        return value

    return parse


def _float_in(low: float, high: float, low_open: bool = False) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        value = float(raw)
        if value != value or value < low or value > high or (low_open and value == low):
            raise ValueError
        return value

    return parse


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered not in ("true", "false"):
        raise ValueError
    return lowered == "true"


def _one_of(*choices: Any) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        if raw in choices:
            return raw
        if str(raw).isdigit() and int(raw) in choices:
            return int(raw)
        raise ValueError

    return parse


def _matching(pattern: re.Pattern[str]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if not pattern.fullmatch(raw):
            raise ValueError
        return raw

    return parse


def _string_list(item: Callable[[str], Any]) -> Callable[[str], tuple]:
    def parse(raw: str) -> tuple:
        value = json.loads(raw)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError
        return tuple(item(v) for v in value)

    return parse


def _label_map(raw: str) -> tuple[tuple[str, str], ...]:
    """A JSON object of Kubernetes labels, kept sorted so the config stays hashable."""
    value = json.loads(raw)
    if not isinstance(value, dict) or not value or not all(
            isinstance(k, str) and isinstance(v, str) and LABEL_VALUE.match(v) for k, v in value.items()):
        raise ValueError
    return tuple(sorted(value.items()))


def _cidr(raw: str) -> str:
    return str(ipaddress.ip_network(raw, strict=True))


_GPU_NAMES = tuple(catalog.gpu_catalog())

KEYS: tuple[Key, ...] = (
    # Where it runs
    Key("cloud", "Where the GPU node pool lives: an EKS or GKE cluster made by this stack, or an existing cluster "
        "(required: a stack without it is refused rather than deployed to the current kubectl context).",
        _one_of("existing", "aws", "gcp"), None, "aws", "one of existing, aws, gcp"),
    Key("region", "Cloud region of the cluster (required for aws and gcp).",
        _matching(REGION), None, "us-east-1", "a region name such as us-east-1 or us-central1"),
    Key("zones", "Zones of the nodes, as a JSON list. aws: at least two (the VPC's subnets); empty = the first two "
        "available. gcp: zones of the region; empty = those that offer gpuType (infra/catalog/gpu_zones.yaml).",
        _string_list(_matching(re.compile(r"^[a-z]{2,}(-[a-z0-9]+){2,4}$"))), (), '\'["us-east-1a"]\'',
        "a JSON list of zone names"),
    Key("gcpProject", "Google Cloud project of the GKE cluster (required for gcp).",
        _matching(re.compile(r"^[a-z][-a-z0-9]{4,28}[a-z0-9]$")), None, "my-gpu-project", "a GCP project id"),
    Key("subnetIds", "Existing subnets for EKS, as a JSON list; empty = the stack makes a VPC.",
        _string_list(_matching(re.compile(r"^subnet-[0-9a-f]{8,17}$"))), (), '\'["subnet-0abc1234"]\'',
        "a JSON list of subnet ids (subnet-...)"),
    Key("publicNodes", "Put the nodes on public IPs in public subnets (no NAT to pay for); false = private nodes "
        "behind a NAT gateway (aws) or Cloud NAT (gcp).",
        _bool, False, "true", "true or false"),
    Key("adminPrincipals", "IAM principals (role or user ARNs) given cluster-admin on EKS through access entries, "
        "as a JSON list: CI, the reaper, teammates; the creator is admin already.",
        _string_list(_matching(re.compile(r"^arn:aws[a-z-]*:iam::[0-9]{12}:(role|user)/[A-Za-z0-9+=,.@_/-]+$"))),
        (), '\'["arn:aws:iam::123456789012:role/ci"]\'', "a JSON list of IAM role or user ARNs"),
    Key("apiAllowedCidrs", "Source CIDRs that may reach the cluster's public API endpoint, as a JSON list: EKS "
        "publicAccessCidrs, GKE master authorized networks. Empty = anywhere (0.0.0.0/0; the plan warns). Nodes "
        "reach the API privately either way.",
        _string_list(_cidr), (), '\'["203.0.113.0/24"]\'', "a JSON list of CIDRs such as 203.0.113.0/24"),
    Key("awsProfile", "AWS CLI profile of the AWS provider and of the kubeconfig's `aws eks get-token`; empty = "
        "the default credential chain.",
        _matching(re.compile(r"^[A-Za-z0-9_.+@-]{1,64}$")), None, "ml-eval", "an AWS CLI profile name"),
    Key("awsRoleArn", "IAM role the AWS provider and the kubeconfig assume (so every user acts as the same "
        "principal); empty = none.",
        _matching(re.compile(r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]+$")), None,
        "arn:aws:iam::123456789012:role/qwen2vl-deployer", "an IAM role ARN"),
    Key("kubeContext", "kubeconfig context of the existing cluster (cloud=existing); empty = current context.",
        _matching(re.compile(r"^[A-Za-z0-9_.@:/-]{1,253}$")), None, "kind-qwen2vl", "a kubeconfig context name"),
    Key("kuberayOperator", "KubeRay operator: install = this stack installs it (refused where one already runs); "
        "existing = use the one already running, at a compatible version; auto = existing where the cluster runs "
        "one (cloud existing, looked up at preview/up), else install.",
        _one_of(*INSTALL_CHOICES), "auto", "existing", "one of " + ", ".join(INSTALL_CHOICES)),
    Key("nvidiaDevicePlugin", "NVIDIA device plugin: install = this stack installs it; existing = the cluster's own "
        "(the NVIDIA GPU Operator's, GKE's, or another DaemonSet); auto = existing where the cluster runs one "
        "(cloud existing, looked up at preview/up; always on gcp), else install.",
        _one_of(*INSTALL_CHOICES), "auto", "existing", "one of " + ", ".join(INSTALL_CHOICES)),
    Key("kubernetesVersion", "Kubernetes minor version of the cluster; also the schema version manifests are checked against.",
        _matching(K8S_MINOR), "1.35", "1.35", "a minor version such as 1.35 (supported ones: "
        "infra/catalog/kubernetes_versions.yaml)"),
    Key("gpuType", "GPU model of the node pool, a name from infra/catalog/gpus.yaml.",
        _one_of(*_GPU_NAMES), "A100-80GB", "L4", "one of " + ", ".join(_GPU_NAMES)),
    Key("gpuInstanceType", "Instance (aws) or machine type (gcp) of the GPU pool, from infra/catalog/instances.yaml; "
        "it sets gpuType. Empty = the smallest shape of gpuType whose GPU count is a multiple of tensorParallelSize. "
        "A node of N GPUs runs N / tensorParallelSize replicas.",
        _matching(re.compile(r"^[a-z][a-z0-9]*[.-][a-z0-9.-]+$")), None, "g6.48xlarge",
        "an instance type such as g6.48xlarge (aws) or a2-ultragpu-8g (gcp)"),
    Key("systemInstanceType", "Instance (aws) or machine type (gcp) of the system node pool, which runs the Ray head, "
        "the KubeRay operator and the cluster add-ons; empty = the cloud's default in infra/nodepool.py.",
        _matching(re.compile(r"^[a-z][a-z0-9]*[.-][a-z0-9.-]+$")), None, "m6i.xlarge",
        "an instance type such as m6i.xlarge (aws) or e2-standard-4 (gcp)"),
    Key("gpuNodesMin", "Smallest number of GPU nodes (0 lets the pool scale to zero when idle).",
        _int_in(0, 16), 0, "0", "an integer from 0 to 16"),
    Key("gpuNodesMax", "Largest number of GPU nodes; caps the hourly cost.",
        _int_in(1, 16), 1, "1", "an integer from 1 to 16"),
    Key("spot", "Run GPU nodes on spot/preemptible capacity (cheaper, can be reclaimed at any time); refused on a "
        "production stack unless allowSpotInProduction is set.",
        _bool, False, "true", "true or false"),
    Key("allowSpotInProduction", "Accept spot GPU nodes on a production stack (named prod, or with protect true), "
        "knowing that a reclaimed node takes the endpoint down until a new one has loaded the model.",
        _bool, False, "true", "true or false"),
    Key("hourlyPriceUsd", "Override of the catalog's hourly price of one GPU node, for the cost estimate.",
        _float_in(0.0, 1000.0, low_open=True), None, "12.5", "a positive number of US dollars"),
    Key("maxHourlyUsd", "Budget: refuse a stack whose GPU pool at its largest costs more per hour.",
        _float_in(0.0, 10000.0, low_open=True), None, "25", "a positive number of US dollars"),
    Key("maxTotalUsd", "Budget: refuse a stack (an eval run) whose ttlHours at the hourly cost would cost more.",
        _float_in(0.0, 1000000.0, low_open=True), None, "100", "a positive number of US dollars"),
    Key("protect", "Protect stateful and slow-to-recreate resources from deletion (prod).",
        _bool, False, "true", "true or false"),
    Key("owner", "Owner tag/label on every cloud resource.",
        _matching(TAG_VALUE), "ml-platform", "ml-platform", "letters, digits, '.', '_' or '-', at most 63"),
    Key("costCenter", "cost-center tag/label on every cloud resource.",
        _matching(TAG_VALUE), "ml-platform", "ml-platform", "letters, digits, '.', '_' or '-', at most 63"),
    Key("ttlHours", "Hours after creation when this stack may be reaped (eval stacks); empty = no TTL.",
        _int_in(1, 720), None, "4", "an integer from 1 to 720"),
    # What it serves
    Key("modelRepo", "Hugging Face repository of the model.",
        _matching(REPO), pins.MODEL_REPO, pins.MODEL_REPO, "an owner/name repository id"),
    Key("modelRevision", "Commit of the model repository (7 to 40 hex characters).",
        _matching(REVISION), pins.MODEL_REVISION, pins.MODEL_REVISION, "7 to 40 lowercase hex characters"),
    Key("requireModelLock", "Refuse `pulumi up` unless infra/model.lock.json resolves modelRevision (prod).",
        _bool, False, "true", "true or false"),
    Key("hubEndpoint", "Hugging Face hub mirror (HF_ENDPOINT) for model downloads; empty = huggingface.co.",
        _matching(re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]+)?(/[A-Za-z0-9._~/-]*)?$")), None,
        "https://hf-mirror.example.com", "an http(s) URL"),
    Key("modelSource", "Where vLLM downloads the model: the Hugging Face hub (or hubEndpoint) or ModelScope.",
        _one_of("huggingface", "modelscope"), "huggingface", "modelscope", "one of huggingface, modelscope"),
    Key("modelConfigFile", "config.json of a model missing from the preflight catalog (path from the repository root).",
        _matching(re.compile(r"^[A-Za-z0-9_./-]+\.json$")), None, "models/my-model/config.json",
        "a relative path to a .json file"),
    Key("quantization", "vLLM quantization kernel; auto = what vLLM picks for the checkpoint and GPU.",
        _one_of(*QUANTIZATION_CHOICES), "auto", "auto", "one of " + ", ".join(QUANTIZATION_CHOICES)),
    Key("tensorParallelSize", "GPUs per model replica (vLLM --tensor-parallel-size), all on one node; it divides "
        "the GPUs of a node, which runs GPUs / tensorParallelSize replicas.",
        _int_in(1, 8), 4, "4", "an integer from 1 to 8"),
    Key("maxModelLen", "Longest sequence (prompt + output) in tokens (vLLM --max-model-len).",
        _int_in(256, 131072), 8192, "8192", "an integer from 256 to 131072"),
    Key("maxNumSeqs", "Sequences vLLM runs at once (vLLM --max-num-seqs).",
        _int_in(1, 1024), 16, "16", "an integer from 1 to 1024"),
    Key("gpuMemoryUtilization", "Share of each GPU's memory vLLM may use (vLLM --gpu-memory-utilization).",
        _float_in(0.1, 0.99), 0.90, "0.9", "a number from 0.1 to 0.99"),
    Key("dtype", "Activation dtype (vLLM --dtype).",
        _one_of("auto", "float16", "bfloat16"), "auto", "auto", "one of auto, float16, bfloat16"),
    Key("vllmVersion", "vLLM release in the image and the one the preflight judges.",
        _matching(VERSION), pins.VLLM_VERSION, pins.VLLM_VERSION, f"a release such as {pins.VLLM_VERSION}"),
    Key("servedModelName", "Model name clients send (vLLM --served-model-name).",
        _matching(DNS_LABEL), pins.SERVED_MODEL_NAME, pins.SERVED_MODEL_NAME, "a DNS label (a-z, 0-9, '-')"),
    # What the endpoint accepts: the ingress answers the rest itself, before vLLM (docs/serving.md)
    Key("maxRequestMib", "Largest request body in MiB (images travel inline, base64); larger ones get 413 before "
        "the body is read.",
        _int_in(1, 1024), LIMITS.DEFAULT_MAX_REQUEST_MIB, str(LIMITS.DEFAULT_MAX_REQUEST_MIB), "an integer from 1 to 1024"),
    Key("maxImageMegapixels", "Largest image, in megapixels as sent, that the endpoint decodes; larger ones (and "
        "decompression bombs) get 400 from the image header, before decoding. Accepted images are resized to what "
        "vLLM profiled.",
        _int_in(1, 200), LIMITS.DEFAULT_MAX_IMAGE_MEGAPIXELS, str(LIMITS.DEFAULT_MAX_IMAGE_MEGAPIXELS),
        "an integer from 1 to 200"),
    # How it is exposed
    Key("namespace", "Kubernetes namespace of the workload.",
        _matching(DNS_LABEL), "qwen2vl", "qwen2vl", "a DNS label (a-z, 0-9, '-')"),
    Key("image", "Serving image reference, by digest for prod; empty = the image this stack builds.",
        _matching(IMAGE_REF), None, "registry.example.com/qwen2vl-vllm@sha256:<64 hex>",
        "an image reference, preferably name@sha256:digest"),
    Key("registry", "Registry to push the built image to on an existing cluster (cloud=existing).",
        _matching(re.compile(r"^[a-z0-9][a-z0-9.-]*(:[0-9]+)?(/[a-z0-9._-]+)*$")), None, "registry.example.com/ml",
        "a registry host and path such as registry.example.com/ml"),
    Key("modelStorage", "Where each GPU worker keeps its model copy: ephemeral = a volume of its own, created with "
        "the pod and deleted with it, filled at start (docs/operations.md); readWriteMany = one shared volume of a "
        "ReadWriteMany storageClass (existing clusters only: the clusters this stack creates have none); image = "
        "baked into the image at build time (needs the model lock).",
        _one_of(*MODEL_STORAGE_CHOICES), "ephemeral", "image", "one of " + ", ".join(MODEL_STORAGE_CHOICES)),
    Key("modelCacheSize", "Size of the model volume (each worker's own, or the shared one).",
        _matching(QUANTITY), "200Gi", "200Gi", "a Kubernetes quantity such as 200Gi"),
    Key("storageClass", "StorageClass of the model volume; empty = the cluster default (readWriteMany needs one "
        "that offers ReadWriteMany, such as Filestore or EFS).",
        _matching(DNS_LABEL), None, "gp3", "a StorageClass name"),
    Key("gcsRedisAddress", "Redis (host:port) that keeps the Ray GCS state, so a head restart does not reload the "
        "model (KubeRay gcsFaultToleranceOptions); empty = no GCS fault tolerance.",
        _matching(REDIS_ADDRESS), None, "redis.qwen2vl.svc:6379", "host:port of a Redis server"),
    Key("gcsRedisPasswordSecret", "Secret in the workload namespace whose key `password` holds the Redis password "
        "(with gcsRedisAddress); empty = Redis without a password.",
        _matching(DNS_LABEL), None, "qwen2vl-redis", "a Secret name (DNS label)"),
    Key("gcsRedisPodLabels", "Labels of the Redis pods when gcsRedisAddress is a Service in this cluster, as a JSON "
        "object equal to (or a part of) that Service's selector: the egress policy then admits those pods, which "
        "a CIDR rule cannot on GKE (docs/pod.md). Empty = Redis outside the cluster (Memorystore, ElastiCache).",
        _label_map, None, '\'{"app.kubernetes.io/name": "redis"}\'', "a JSON object of label names and values"),
    Key("allowedCidrs", "CIDRs allowed to reach the endpoint, as a JSON list (NetworkPolicy).",
        _string_list(_cidr), (), '\'["10.0.0.0/8"]\'', "a JSON list of CIDRs such as 10.0.0.0/8"),
    Key("allowedNamespaces", "Namespaces allowed to reach the endpoint, as a JSON list (NetworkPolicy).",
        _string_list(_matching(DNS_LABEL)), (), '\'["apps"]\'', "a JSON list of namespace names"),
    Key("monitoringNamespace", "Namespace of the Prometheus that scrapes the pods' metrics ports (where the stack "
        "installs kube-prometheus-stack, with prometheusOperator on aws and gcp); the NetworkPolicy admits those ports "
        "from it alone (docs/pod.md).",
        _matching(DNS_LABEL), "monitoring", "monitoring", "a namespace name (a DNS label)"),
    Key("ingressHost", "Host name of an HTTPS Ingress for the endpoint (GKE's load balancer: gcp, or existing with "
        "ingressClass gce); empty = no Ingress, reach the endpoint with kubectl port-forward (docs/operations.md).",
        _matching(HOSTNAME), None, "qwen2vl.example.com", "a DNS host name"),
    Key("ingressClass", "Class of the Ingress (with ingressHost); empty = gce on gcp. Only gce, GKE's built-in "
        "external Application Load Balancer, for which the stack sets the health check (the open GET /health), the "
        "backend timeout and the NetworkPolicy for the load balancer's address ranges.",
        _one_of(*INGRESS_CLASSES), None, "gce", "one of " + ", ".join(INGRESS_CLASSES)),
    Key("ingressTlsSecret", "A kubernetes.io/tls Secret in the workload namespace holding ingressHost's certificate; "
        "empty = a Google-managed certificate for ingressHost (issued once the host's DNS points at the load "
        "balancer).",
        _matching(DNS_LABEL), None, "qwen2vl-tls", "a Secret name (DNS label)"),
    Key("prometheusOperator", "Monitoring: the pods' PodMonitor, the alert rules (PrometheusRule), the KubeRay "
        "operator's ServiceMonitor and the Grafana dashboard. On aws and gcp the stack installs kube-prometheus-stack "
        "(pinned) into monitoringNamespace; on existing, `up` checks that the Prometheus operator's CRDs exist "
        "(install kube-prometheus-stack first, or leave this false) (docs/operations.md).",
        _bool, False, "true", "true or false"),
    Key("prometheusRelease", "Helm release name of the kube-prometheus-stack whose Prometheus picks up the monitors "
        "and rules: they carry the label release=<this>, which its default selectors match. On aws and gcp the "
        "stack installs the chart under this name.",
        _matching(DNS_LABEL), "kube-prometheus-stack", "kube-prometheus-stack", "a Helm release name (a DNS label)"),
    Key("ttftP95AlertSeconds", "Alert when the p95 time to first token stays above this many seconds for 10 minutes.",
        _float_in(0.0, 600.0, low_open=True), 5.0, "5", "a positive number of seconds"),
)
KEYS_BY_NAME = {key.name: key for key in KEYS}


def _attr(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@dataclass(frozen=True)
class StackConfig:
    """The validated config of one stack. Field names are the keys in snake_case."""

    stack: str
    cloud: str
    region: str | None
    zones: tuple[str, ...]
    gcp_project: str | None
    subnet_ids: tuple[str, ...]
    public_nodes: bool
    admin_principals: tuple[str, ...]
    api_allowed_cidrs: tuple[str, ...]
    aws_profile: str | None
    aws_role_arn: str | None
    kube_context: str | None
    kuberay_operator: str
    nvidia_device_plugin: str
    kubernetes_version: str
    gpu_type: str
    gpu_instance_type: str | None
    system_instance_type: str | None
    gpu_nodes_min: int
    gpu_nodes_max: int
    spot: bool
    allow_spot_in_production: bool
    hourly_price_usd: float | None
    max_hourly_usd: float | None
    max_total_usd: float | None
    protect: bool
    owner: str
    cost_center: str
    ttl_hours: int | None
    model_repo: str
    model_revision: str
    require_model_lock: bool
    hub_endpoint: str | None
    model_source: str
    model_config_file: str | None
    quantization: str
    tensor_parallel_size: int
    max_model_len: int
    max_num_seqs: int
    gpu_memory_utilization: float
    dtype: str
    vllm_version: str
    served_model_name: str
    max_request_mib: int
    max_image_megapixels: int
    namespace: str
    image: str | None
    registry: str | None
    model_storage: str
    model_cache_size: str
    storage_class: str | None
    gcs_redis_address: str | None
    gcs_redis_password_secret: str | None
    gcs_redis_pod_labels: tuple[tuple[str, str], ...] | None
    allowed_cidrs: tuple[str, ...]
    allowed_namespaces: tuple[str, ...]
    monitoring_namespace: str
    ingress_host: str | None
    ingress_class: str | None
    ingress_tls_secret: str | None
    prometheus_operator: bool
    prometheus_release: str
    ttft_p95_alert_seconds: float
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def bake_model(self) -> bool:
        """The image carries the locked model files (modelStorage image)."""
        return self.model_storage == "image"

    @property
    def ingress_class_name(self) -> str | None:
        """The Ingress's class: the configured one, else GKE's external load balancer on gcp."""
        if self.ingress_host is None:
            return None
        return self.ingress_class or "gce"

    @property
    def monitoring_release(self) -> str | None:
        """The kube-prometheus-stack release whose Prometheus selects our monitors, when monitoring is on."""
        return self.prometheus_release if self.prometheus_operator else None

    @property
    def installs_monitoring(self) -> bool:
        """The stack installs kube-prometheus-stack: monitoring is on and the stack made the cluster."""
        return self.prometheus_operator and self.cloud in ("aws", "gcp")

    @property
    def gpu(self) -> catalog.GpuSpec:
        return catalog.gpu(self.gpu_type)

    @property
    def labels(self) -> dict[str, str]:
        """Ownership labels/tags shared by cloud and Kubernetes resources."""
        labels = {"stack": self.stack, "owner": self.owner, "cost-center": self.cost_center}
        if self.ttl_hours is not None:
            labels["ttl-hours"] = str(self.ttl_hours)
        return labels


def redis_in_cluster(address: str) -> bool:
    """A Service name (`redis`, `redis.ns`, `redis.ns.svc[.cluster.local]`) rather than a host outside."""
    host = address.rsplit(":", 1)[0]
    return "." not in host or host.endswith((".svc", ".svc.cluster.local")) or host.count(".") == 1


def redis_namespace(address: str, default: str) -> str:
    """The namespace of an in-cluster Redis Service: its name's second label, else the workload's."""
    parts = address.rsplit(":", 1)[0].split(".")
    return parts[1] if len(parts) > 1 else default


def _gpu_shape_check(values: dict[str, Any], stack: str, gpu_type_set: bool) -> None:
    """The GPU pool's shape: the named gpuInstanceType (which sets gpuType), or the smallest shape of gpuType whose
    GPUs the TP size divides. A replica's TP group stays on one node: vLLM 0.6.3 runs it with its multiprocessing
    executor inside the replica's pod (VLLM_WORKER_MULTIPROC_METHOD), so TP across nodes is refused."""
    cloud, tp = values["cloud"], values["tensor_parallel_size"]
    named = values["gpu_instance_type"]
    if named is not None:
        shape = catalog.instance_shape(cloud, named)
        if shape is None:
            known = [s.instance for s in catalog.gpu_instances(cloud)]
            raise ConfigError("gpuInstanceType", named, f"not a {cloud} GPU shape in infra/catalog/instances.yaml; "
                              f"known: {', '.join(known)}", stack, known[0] if known else None)
        carried = catalog.instance_type(cloud, named).gpu
        if gpu_type_set and carried != values["gpu_type"]:
            raise ConfigError("gpuType", values["gpu_type"], f"gpuInstanceType {named} carries {carried} GPUs", stack,
                              fix=f"`pulumi config set {PROJECT}:gpuType {carried} --stack {stack}` (or "
                                  f"`pulumi config rm {PROJECT}:gpuType --stack {stack}`)")
        values["gpu_type"] = carried
        sizes = [shape.gpus]
        where = f"{named} has {shape.gpus} GPUs"
    else:
        sizes = sorted({s.gpus for s in catalog.gpu(values["gpu_type"]).shapes_in(cloud)})
        if not sizes:
            offered = sorted(name for name, spec in catalog.gpu_catalog().items() if spec.shapes_in(cloud))
            raise ConfigError("gpuType", values["gpu_type"], f"{cloud} sells no {values['gpu_type']} shape in the "
                              f"catalog; GPUs it sells: {', '.join(offered)}", stack, offered[0] if offered else None)
        where = f"{values['gpu_type']} shapes in {cloud} have {' or '.join(map(str, sizes))} GPUs"
    if any(size % tp == 0 for size in sizes):
        return
    choices = sorted({d for size in sizes for d in range(1, size + 1) if size % d == 0})
    if tp > max(sizes):
        why = (f"a replica's GPUs must be on one node (tensor parallelism across nodes is not supported: vLLM runs "
               f"the TP group inside the replica's pod), and {where}")
    else:
        why = f"it must divide the GPUs of a node (each node runs GPUs / TP replicas), and {where}"
    raise ConfigError("tensorParallelSize", tp, f"{why}; choose one of {', '.join(map(str, choices))}", stack,
                      str(max(c for c in choices if c <= tp)))


def _cross_check(values: dict[str, Any], stack: str, gpu_type_set: bool = False) -> None:
    if values["cloud"] in ("aws", "gcp") and values["region"] is None:
        raise ConfigError("region", None, f"cloud {values['cloud']} needs a region", stack,
                          "us-east-1" if values["cloud"] == "aws" else "us-central1")
    if values["cloud"] == "gcp" and values["gcp_project"] is None:
        raise ConfigError("gcpProject", None, "cloud gcp needs the project of the cluster", stack, "my-gpu-project")
    if values["spot"] and (stack == "prod" or values["protect"]) and not values["allow_spot_in_production"]:
        # AWS gives a Spot instance two minutes' notice, GCP a Spot VM 30 seconds: the replica on it is gone
        # until a new node has started and loaded the model again.
        raise ConfigError("spot", True, f"stack {stack} is a production stack (named prod, or protect true), and "
                          "a reclaimed spot node takes the endpoint down until a new one has loaded the model; set "
                          f"{PROJECT}:allowSpotInProduction true to accept that", stack, "false")
    if values["gpu_nodes_min"] > values["gpu_nodes_max"]:
        raise ConfigError("gpuNodesMin", values["gpu_nodes_min"],
                          f"must not exceed gpuNodesMax ({values['gpu_nodes_max']})", stack,
                          str(values["gpu_nodes_max"]))
    if values["gcs_redis_password_secret"] is not None and values["gcs_redis_address"] is None:
        raise ConfigError("gcsRedisPasswordSecret", values["gcs_redis_password_secret"],
                          "it is the password of the Redis at gcsRedisAddress, which is not set", stack,
                          fix=f"`pulumi config set {PROJECT}:gcsRedisAddress {KEYS_BY_NAME['gcsRedisAddress'].example} "
                              f"--stack {stack}`")
    redis = values["gcs_redis_address"]
    if redis is not None and redis_in_cluster(redis) and values["gcs_redis_pod_labels"] is None:
        raise ConfigError("gcsRedisPodLabels", None, f"gcsRedisAddress {redis} is a Service in the cluster, and the "
                          "egress policy can admit in-cluster pods only by their labels (a CIDR rule never matches "
                          "them on GKE)", stack, KEYS_BY_NAME["gcsRedisPodLabels"].example)
    if values["gcs_redis_pod_labels"] is not None and redis is None:
        raise ConfigError("gcsRedisPodLabels", dict(values["gcs_redis_pod_labels"]),
                          "it selects the Redis at gcsRedisAddress, which is not set", stack,
                          fix=f"`pulumi config set {PROJECT}:gcsRedisAddress {KEYS_BY_NAME['gcsRedisAddress'].example} "
                              f"--stack {stack}`")
    if values["model_storage"] == "readWriteMany" and values["cloud"] in ("aws", "gcp"):
        # The clusters this stack creates get no ReadWriteMany driver (infra/platform/addons.py installs the
        # EBS CSI driver only; GKE's Filestore CSI driver is an add-on the cluster does not enable), so the
        # claim would never bind; the placement check would refuse it later with the same verdict.
        raise ConfigError("modelStorage", "readWriteMany", f"the {values['cloud']} cluster this stack creates has no "
                          "ReadWriteMany storage (no Filestore or EFS driver); readWriteMany is for an existing "
                          "cluster that offers such a class", stack, "ephemeral")
    if values["model_storage"] == "readWriteMany" and values["storage_class"] is None:
        # The cluster default class (gp2/gp3, pd-balanced) offers only ReadWriteOnce: the claim would never bind.
        raise ConfigError("modelStorage", "readWriteMany", "it needs storageClass set to a class that offers "
                          "ReadWriteMany (Filestore on GKE, EFS on EKS)", stack,
                          fix=f"`pulumi config set {PROJECT}:storageClass <a ReadWriteMany class of the cluster> --stack {stack}`")
    if values["max_model_len"] < values["max_num_seqs"]:
        raise ConfigError("maxModelLen", values["max_model_len"],
                          f"must be at least maxNumSeqs ({values['max_num_seqs']})", stack, "8192")
    if values["image"] is None and values["vllm_version"] != pins.VLLM_VERSION:
        raise ConfigError("vllmVersion", values["vllm_version"],
                          f"the image this stack builds is locked to vLLM {pins.VLLM_VERSION} "
                          "(images/vllm/requirements.lock); set image to one with this vLLM, or change the pins "
                          "and run scripts/lock_image.py", stack, pins.VLLM_VERSION)
    if values["cloud"] == "existing" and values["image"] is None and values["registry"] is None:
        raise ConfigError("registry", None, "an existing cluster needs a registry to push the built image to "
                          "(or set image to a pushed one)", stack, "registry.example.com/ml")
    _check_ingress(values, stack)
    if values["cloud"] in ("aws", "gcp"):
        _gpu_shape_check(values, stack, gpu_type_set)
    elif values["gpu_instance_type"] is not None:
        raise ConfigError("gpuInstanceType", values["gpu_instance_type"], "an existing cluster's nodes are its own; "
                          "the stack creates no GPU pool there", stack,
                          fix=f"`pulumi config rm {PROJECT}:gpuInstanceType --stack {stack}`")


# Config namespaces besides the project's that a stack file may set: the providers this program uses
# (their own settings, such as kubernetes:enableServerSideApply) and Pulumi's own (pulumi:tags).
PROVIDER_NAMESPACES = ("aws", "gcp", "kubernetes", "docker-build", "random", "pulumi")


def check_namespaces(config: Mapping[str, Any], stack: str) -> None:
    """Refuse `qwen2-vl:maxModelLen` and the like (`config`: every configured "namespace:key" and its value):
    the program reads only its own namespace, so such a key would be ignored without a word and its
    default used."""
    for full_key in sorted(config):
        namespace, _, name = full_key.partition(":")
        if namespace == PROJECT or namespace in PROVIDER_NAMESPACES:
            continue
        ours = name in KEYS_BY_NAME or name in SECRET_KEYS
        hint = (f"this program reads only {PROJECT}:<key>; did you mean {PROJECT}:{name}?" if ours else
                f"this program reads {PROJECT}:<key> and the settings of its providers "
                f"({', '.join(PROVIDER_NAMESPACES)}), not {namespace}:<key>")
        fix = f"`pulumi config rm {full_key} --stack {stack}`"
        if ours:
            fix += f" and `pulumi config set {PROJECT}:{name} <value> --stack {stack}`"
        raise ConfigError(name, config[full_key], hint, stack, fix=fix, namespace=namespace)


def _check_ingress(values: dict[str, Any], stack: str) -> None:
    """An Ingress only where the stack can make it work: a class whose load balancer it configures."""
    host, cloud = values["ingress_host"], values["cloud"]
    if host is None:
        for key, attr in (("ingressClass", "ingress_class"), ("ingressTlsSecret", "ingress_tls_secret")):
            if values[attr] is not None:
                raise ConfigError(key, values[attr], "it configures the Ingress of ingressHost, which is not set", stack,
                                  fix=f"`pulumi config rm {PROJECT}:{key} --stack {stack}`")
        return
    remove = f"`pulumi config rm {PROJECT}:ingressHost --stack {stack}` (then reach the endpoint with kubectl port-forward)"
    if cloud == "aws":
        raise ConfigError("ingressHost", host, "the stack installs no ingress controller on EKS (no AWS Load Balancer "
                          "Controller), so the Ingress would get no load balancer, health check or TLS; expose the "
                          "endpoint through your own controller, admitted with allowedNamespaces", stack, fix=remove)
    if cloud == "existing" and values["ingress_class"] is None:
        raise ConfigError("ingressClass", None, "an Ingress on an existing cluster needs its class named, and only gce "
                          "(GKE's built-in controller) is one whose health check and address ranges the stack sets up; "
                          "on another cluster, leave ingressHost empty", stack, "gce")


def parse_stack_config(raw: Mapping[str, Any], stack: str) -> StackConfig:
    """Validate raw config values (strings as Pulumi stores them; None = unset) into a StackConfig."""
    unknown = sorted(set(raw) - set(KEYS_BY_NAME) - set(SECRET_KEYS))
    if unknown:
        key = unknown[0]
        close = [k for k in KEYS_BY_NAME if k.lower() == key.lower() or k.lower().startswith(key.lower()[:4])]
        hint = f"did you mean {close[0]}?" if close else "see docs/config.md for the keys"
        fix = f"`pulumi config rm {PROJECT}:{key} --stack {stack}`"
        if close:
            # The user's own value under the key they meant: the typo was the key, not the value.
            fix += f" and `pulumi config set {PROJECT}:{close[0]} {shlex.quote(str(raw[key]))} --stack {stack}`"
        raise ConfigError(key, raw[key], f"not a config key of this project ({hint})", stack, fix=fix)
    values: dict[str, Any] = {}
    for key in KEYS:
        text = raw.get(key.name)
        if text is None or text == "":
            values[_attr(key.name)] = key.default
            continue
        try:
            values[_attr(key.name)] = key.parse(str(text))
        except (ValueError, TypeError, json.JSONDecodeError):
            raise ConfigError(key.name, text, f"expected {key.allowed}", stack, key.example) from None
    _require_keys(raw, values, stack)
    _cross_check(values, stack, gpu_type_set=raw.get("gpuType") not in (None, ""))
    _check_model_revision(raw, values, stack)
    return StackConfig(stack=stack, **values)


def _require_keys(raw: Mapping[str, Any], values: dict[str, Any], stack: str) -> None:
    if not any(value not in (None, "") for value in raw.values()):
        raise ConfigError("cloud", None, f"stack {stack} has no {PROJECT} config at all (is Pulumi.{stack}.yaml "
                          "empty?); a stack names at least where it runs: aws, gcp or existing", stack, "aws")
    if values["cloud"] is None:
        raise ConfigError("cloud", None, "every stack names where it runs: aws or gcp (a cluster this stack "
                          "creates) or existing (the cluster of kubeContext); there is no default, so that a stack "
                          "file without it never deploys to whatever cluster kubectl points at", stack, "aws")


def _check_model_revision(raw: Mapping[str, Any], values: dict[str, Any], stack: str) -> None:
    """A modelRepo changed without its modelRevision would download the default revision, a commit of the
    pinned repository, from another one: refused here, before the download fails on the GPU node. Whether
    a set revision can be verified is the preflight gate's question (infra/preflight_gate.py)."""
    repo, revision = values["model_repo"], values["model_revision"]
    if raw.get("modelRevision") in (None, "") and repo.lower() != pins.MODEL_REPO.lower():
        raise ConfigError("modelRevision", None, f"modelRepo is {repo}, but the default revision {revision} is a "
                          f"commit of {pins.MODEL_REPO}; set the commit of {repo} you deploy "
                          "(scripts/lock_model.py resolves and records it)", stack, "<commit>")