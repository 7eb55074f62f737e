"""The Kubernetes support catalog (kubernetes_versions.yaml): each cloud's minors and their end of support."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from infra.catalog.files import load


@dataclass(frozen=True)
class VersionSupport:
    cloud: str
    version: str
    standard_until: date
    extended_until: date | None


def support_table(cloud: str) -> dict[str, VersionSupport]:
    entries = load("kubernetes_versions")["clouds"].get(cloud, {}).get("versions", {})
    return {
        version: VersionSupport(
            cloud=cloud, version=version,
            standard_until=date.fromisoformat(dates["standard_until"]),
            extended_until=date.fromisoformat(dates["extended_until"]) if dates["extended_until"] else None,
        )
        for version, dates in entries.items()
    }


def table_read_on() -> str:
    return str(load("kubernetes_versions")["read_on"])
