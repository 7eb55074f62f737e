"""What every workload builder needs: the stack config, the image, and where the GPU pool is."""

from __future__ import annotations

from dataclasses import dataclass

from infra.config import StackConfig
from infra.nodepool import GpuPlacement
SERVE_PORT = 8000
RAY_METRICS_PORT = 8080
DASHBOARD_PORT = 8265
DASHBOARD_AGENT_PORT = 52365
# vLLM's own Prometheus metrics, served by the Serve replica on a port of its own (no API key), so the
# key-protected endpoint on SERVE_PORT never has to expose /metrics.
VLLM_METRICS_PORT = 8081
MODEL_CACHE_PATH = "/models"
# Baked into the image, outside the cache volume's mount point (which would hide it).
BAKED_MODEL_PATH = "/opt/models"


def model_dir_for(cfg: StackConfig) -> str:
    """Where the locked model's files are: baked into the image, or fetched to the cache volume."""
    root = BAKED_MODEL_PATH if cfg.bake_model else MODEL_CACHE_PATH
    return f"{root}/{cfg.model_repo.replace('/', '--')}"


@dataclass(frozen=True)
class WorkloadSpec:
    cfg: StackConfig
    image: str
    placement: GpuPlacement
    operator_namespace: str
    # The resolved model lock (infra/model.lock.json) when it matches the configured revision.
    model_lock: dict | None = None

    @property
    def name(self) -> str:
        return self.cfg.served_model_name

    @property
    def namespace(self) -> str:
        return self.cfg.namespace

    def labels(self, component: str) -> dict[str, str]:
        return {
            "app.kubernetes.io/name": "qwen2vl-serving",
            "app.kubernetes.io/instance": self.name,
            "app.kubernetes.io/component": component,
            "app.kubernetes.io/part-of": "qwen2vl",
            "app.kubernetes.io/managed-by": "qwen2vl-infra",
        }

    @property
    def selector(self) -> dict[str, str]:
        """Matches every pod of this workload (head, workers, smoke job)."""
        return {"app.kubernetes.io/instance": self.name}

    def metadata(self, name: str, component: str, **extra) -> dict:
        return {"name": name, "namespace": self.namespace, "labels": self.labels(component), **extra}

    @property
    def api_key_secret(self) -> str:
        return f"{self.name}-api-key"

    @property
    def hub_token_secret(self) -> str:
        return f"{self.name}-hub-token"

    @property
    def model_cache_claim(self) -> str:
        return f"{self.name}-model-cache"

    @property
    def model_lock_config_map(self) -> str:
        return f"{self.name}-model-lock"

    @property
    def model_dir(self) -> str:
        return model_dir_for(self.cfg)

    @property
    def endpoint_service(self) -> str:
        return f"{self.name}-openai"

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.endpoint_service}.{self.namespace}.svc.cluster.local:{SERVE_PORT}"
