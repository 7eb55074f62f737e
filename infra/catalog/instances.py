"""The instance catalog (instances.yaml): vCPUs, memory and network limits of each machine shape, per cloud."""

from __future__ import annotations

from infra.catalog.files import CatalogError, catalog_path, load


class UnknownInstance(CatalogError):
    """An instance or machine type the catalog does not describe."""


def known_instances(cloud: str) -> list[str]:
    return list(load("instances").get(cloud, {}))


def instance_entry(cloud: str, instance: str) -> dict:
    entry = load("instances").get(cloud, {}).get(instance)
    if entry is None:
        raise UnknownInstance(f"{instance} is not in {catalog_path('instances')} for {cloud}")
    return entry
