"""Facts about the world, one dated and sourced data file each, read by the small typed loaders beside
them: GPUs (gpus.yaml), the zones that offer them (gpu_zones.yaml), models (models.yaml), machine shapes
(instances.yaml), their prices per region (prices.yaml) and Kubernetes versions (kubernetes_versions.yaml).
The preflight, the placement check, the cost estimate, the capacity planner and the clusters all read these,
and nothing else, for those facts."""

from infra.catalog.files import CatalogError, catalog_path
from infra.catalog.gpus import GpuSpec, InstanceShape, gpu, gpu_catalog, instance_shape, node_shape_for
from infra.catalog.instances import InstanceType, UnknownInstance, gpu_instances, instance_type, known_instances
from infra.catalog.models import MIN_REVISION_PREFIX, CatalogModel, RevisionFacts, catalog_model, model_catalog
from infra.catalog.prices import Price, on_demand_price, prices_as_of

__all__ = [
    "CatalogError", "CatalogModel", "GpuSpec", "InstanceShape", "InstanceType", "MIN_REVISION_PREFIX", "Price",
    "RevisionFacts", "UnknownInstance", "catalog_model", "catalog_path", "gpu", "gpu_catalog", "gpu_instances",
    "instance_shape", "instance_type", "known_instances", "model_catalog", "node_shape_for", "on_demand_price",
    "prices_as_of",
]
