"""The catalog: every data file says when its figures were read and where from, and loads through its loader."""

from datetime import date

import pytest

from infra.catalog.files import CATALOG_DIR, load

CATALOG_FILES = sorted(path.stem for path in CATALOG_DIR.glob("*.yaml"))


def test_the_catalog_holds_every_fact_file():
    assert CATALOG_FILES == ["gpu_zones", "gpus", "instances", "kubernetes_versions", "models"]


@pytest.mark.parametrize("name", CATALOG_FILES)
def test_every_catalog_file_carries_its_date_and_sources(name):
    data = load(name)
    date.fromisoformat(str(data["read_on"]))
    sources = data.get("sources") or [
        source for cloud in data.get("clouds", {}).values() for source in cloud.get("sources", [])]
    assert sources and all(isinstance(source, str) and source.strip() for source in sources), name
