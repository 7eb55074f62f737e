"""The model catalog (models.yaml): the config.json fields the preflight reads, per repository, and what
is known about individual revisions."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping

from infra.catalog.files import CatalogError, load

# Revision ids are matched by prefix; shorter prefixes than git's default abbreviation are ambiguous.
MIN_REVISION_PREFIX = 7


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


@lru_cache(maxsize=1)
def model_catalog() -> dict[str, CatalogModel]:
    data = load("models")
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
