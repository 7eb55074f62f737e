"""The price catalog (prices.yaml): on-demand dollars per hour of each machine shape, per region, each region
block with its own date and source."""

from __future__ import annotations

from dataclasses import dataclass

from infra.catalog.files import load


@dataclass(frozen=True)
class Price:
    usd_per_hour: float
    region: str  # the region whose published price this is
    as_of: str
    source: str

    def describe(self, asked_region: str | None = None) -> str:
        where = self.region if asked_region in (None, self.region) else (
            f"{self.region}, the catalog's reference region; {asked_region} is not in it")
        return f"on-demand price in {where} as published by {self.source} (as of {self.as_of})"


def reference_region(cloud: str) -> str | None:
    regions = list(load("prices").get(cloud, {}))
    return regions[0] if regions else None


def on_demand_price(cloud: str, instance: str, region: str | None = None) -> Price | None:
    """The published on-demand price of `instance` in `region`; a region the catalog has not read is priced
    at the cloud's reference region (Price.region says which). None: no published price known."""
    blocks = load("prices").get(cloud, {})
    name = region if region in blocks else reference_region(cloud)
    block = blocks.get(name) if name else None
    if not block or instance not in block["usd_per_hour"]:
        return None
    return Price(float(block["usd_per_hour"][instance]), name, str(block["as_of"]), str(block["source"]))


def prices_as_of(cloud: str | None = None) -> str:
    """The dates of the price blocks (of one cloud, or all), for one-line summaries."""
    data = load("prices")
    clouds = [cloud] if cloud else [c for c in ("aws", "gcp") if c in data]
    return ", ".join(sorted({str(block["as_of"]) for c in clouds for block in data.get(c, {}).values()}))
