"""The GPU and model catalogs (data files beside this module), loaded once and typed."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import yaml

_HERE = Path(__file__).parent
# Revision ids are matched by prefix; shorter prefixes than git's default abbreviation are ambiguous.
MIN_REVISION_PREFIX = 7


class CatalogError(ValueError):
    """A name or revision the catalog does not know."""


@dataclass(frozen=True)
class InstanceShape:
    cloud: str
    instance: str
    gpus: int
    usd_per_hour: float | None
    accelerator: str | None = None


@dataclass(frozen=True)
class GpuSpec:
    name: str
    memory_gib: float
    compute_capability: tuple[int, int]
    shapes: tuple[InstanceShape, ...]

    @property
    def capability_int(self) -> int:
        """vLLM's integer form: 8.6 -> 86."""
        major, minor = self.compute_capability
        return major * 10 + minor

    @property
    def supports_bfloat16(self) -> bool:
        return self.compute_capability >= (8, 0)

    def shapes_in(self, cloud: str, gpus: int | None = None) -> tuple[InstanceShape, ...]:
        return tuple(s for s in self.shapes if s.cloud == cloud and (gpus is None or s.gpus == gpus))


@dataclass(frozen=True)
class RevisionFacts:
    revision: str
    config_overrides: Mapping[str, Any]
    bad_reason: str | None
    note: str | None


@dataclass(frozen=True)
class CatalogModel:
    repo: str
    config: Mapping[str, Any]
    revisions: tuple[RevisionFacts, ...]

    def revision_facts(self, revision: str | None) -> RevisionFacts | None:
        """The catalog's entry for `revision` (a full id or a prefix of at least 7 characters)."""
        if not revision or len(revision) < MIN_REVISION_PREFIX:
            return None
        revision = revision.lower()
        # Either id may be the abbreviation: the catalog records some commits by their short id only.
        matches = [r for r in self.revisions if r.revision.startswith(revision) or revision.startswith(r.revision)]
        return matches[0] if len(matches) == 1 else None

    def config_at(self, revision: str | None) -> dict[str, Any]:
        """config.json at `revision`: the newest known config unless the revision is known to differ."""
        config = copy.deepcopy(dict(self.config))
        facts = self.revision_facts(revision)
        if facts is not None:
            config.update(copy.deepcopy(dict(facts.config_overrides)))
        return config


def _capability(text: str) -> tuple[int, int]:
    major, minor = str(text).split(".")
    return int(major), int(minor)


@lru_cache(maxsize=1)
def _gpu_data() -> dict[str, Any]:
    return yaml.safe_load((_HERE / "gpus.yaml").read_text())


@lru_cache(maxsize=1)
def gpu_catalog() -> dict[str, GpuSpec]:
    return {
        name: GpuSpec(
            name=name,
            memory_gib=float(entry["memory_gib"]),
            compute_capability=_capability(entry["compute_capability"]),
            shapes=tuple(InstanceShape(**shape) for shape in entry["shapes"]),
        )
        for name, entry in _gpu_data()["gpus"].items()
    }


def prices_as_of() -> str:
    return str(_gpu_data()["prices_as_of"])


def gpu(name: str) -> GpuSpec:
    catalog = gpu_catalog()
    if name not in catalog:
        raise CatalogError(f"unknown GPU {name!r}; the catalog has: {', '.join(catalog)}")
    return catalog[name]


@lru_cache(maxsize=1)
def model_catalog() -> dict[str, CatalogModel]:
    data = yaml.safe_load((_HERE / "models.yaml").read_text())
    return {
        repo: CatalogModel(
            repo=repo,
            config=entry["config"],
            revisions=tuple(
                RevisionFacts(
                    revision=rev,
                    config_overrides=facts.get("config", {}),
                    bad_reason=facts.get("bad"),
                    note=facts.get("note"),
                )
                for rev, facts in entry["revisions"].items()
            ),
        )
        for repo, entry in data["models"].items()
    }


def catalog_model(name: str) -> CatalogModel:
    """A catalog model by repository id (case-insensitive)."""
    by_lower = {repo.lower(): model for repo, model in model_catalog().items()}
    if name.lower() not in by_lower:
        raise CatalogError(f"unknown model {name!r}; the catalog has: {', '.join(model_catalog())}")
    return by_lower[name.lower()]
