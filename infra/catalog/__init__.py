"""Facts about the world, one dated and sourced data file each, read by the small typed loaders beside
them: GPUs (gpus.yaml), the zones that offer them (gpu_zones.yaml), models (models.yaml), machine shapes
(instances.yaml) and Kubernetes versions (kubernetes_versions.yaml). The preflight, the placement check,
the cost estimate and the clusters all read these, and nothing else, for those facts."""

from infra.catalog.files import CatalogError, catalog_path
from infra.catalog.gpus import GpuSpec, InstanceShape, gpu, gpu_catalog, prices_as_of
from infra.catalog.models import MIN_REVISION_PREFIX, CatalogModel, RevisionFacts, catalog_model, model_catalog

__all__ = [
    "CatalogError", "CatalogModel", "GpuSpec", "InstanceShape", "MIN_REVISION_PREFIX", "RevisionFacts",
    "catalog_model", "catalog_path", "gpu", "gpu_catalog", "model_catalog", "prices_as_of",
]
