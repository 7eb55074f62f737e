"""Where each GPU worker keeps its model copy (config key modelStorage). No ReadWriteOnce volume is ever
shared: a second worker, or the new cluster of a NewCluster upgrade, on another node would wait forever
on a Multi-Attach error (review-k8s #5).

- ephemeral: a generic ephemeral volume per pod (`ephemeral.volumeClaimTemplate`): the PVC is created
  with the pod, in the pod's zone, and deleted with it, so a scaled-to-zero stack keeps no disk. The
  verifying init container (model_source.py) fills it, or, without a resolved lock, vLLM downloads into it.
- readWriteMany: one claim of a ReadWriteMany class (Filestore, EFS) that every worker mounts; the
  files are downloaded once and survive pods, at the price of a standing file share.
- image: the files are baked into the image at BAKED_MODEL_PATH; the pod needs no model volume, only a
  small writable HF_HOME.
"""

from __future__ import annotations

from infra.workload.spec import WorkloadSpec

MODEL_VOLUME = "model-cache"
# HF_HOME of an image-baked model: the hub library's small bookkeeping files, never the weights.
HF_HOME_SIZE = "1Gi"


def _claim_spec(spec: WorkloadSpec, access_mode: str) -> dict:
    claim_spec = {"accessModes": [access_mode], "resources": {"requests": {"storage": spec.cfg.model_cache_size}}}
    if spec.cfg.storage_class:
        claim_spec["storageClassName"] = spec.cfg.storage_class
    return claim_spec


def model_volume(spec: WorkloadSpec) -> dict:
    """The worker pod's volume mounted at MODEL_CACHE_PATH."""
    storage = spec.cfg.model_storage
    if storage == "ephemeral":
        return {"name": MODEL_VOLUME, "ephemeral": {"volumeClaimTemplate": {
            "metadata": {"labels": spec.labels("model-cache")},
            "spec": _claim_spec(spec, "ReadWriteOnce"),
        }}}
    if storage == "readWriteMany":
        return {"name": MODEL_VOLUME, "persistentVolumeClaim": {"claimName": spec.model_cache_claim}}
    return {"name": MODEL_VOLUME, "emptyDir": {"sizeLimit": HF_HOME_SIZE}}


def model_cache_claim(spec: WorkloadSpec) -> dict | None:
    """The shared claim of modelStorage readWriteMany; the other choices have none outside the pod."""
    if spec.cfg.model_storage != "readWriteMany":
        return None
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": spec.metadata(spec.model_cache_claim, "model-cache"),
        "spec": _claim_spec(spec, "ReadWriteMany"),
    }
