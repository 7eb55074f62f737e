"""The model cache volume: weights are downloaded once and survive pod restarts."""

from __future__ import annotations

from infra.workload.spec import WorkloadSpec


def model_cache_claim(spec: WorkloadSpec) -> dict:
    claim_spec = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": spec.cfg.model_cache_size}},
    }
    if spec.cfg.storage_class:
        claim_spec["storageClassName"] = spec.cfg.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": spec.metadata(spec.model_cache_claim, "model-cache"),
        "spec": claim_spec,
    }
