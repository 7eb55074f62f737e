"""Which Kubernetes minor a new cluster may use, from the dated support table (infra/catalog/kubernetes_versions.yaml).

Pure (no Pulumi import): `today` is a parameter so the rule can be checked for any day."""

from __future__ import annotations

from datetime import date

from infra.catalog import catalog_path
from infra.catalog.kubernetes_versions import support_table, table_read_on
from infra.config import ConfigError, StackConfig

# A cluster this close to the end of its version's support is about to be upgraded by its cloud (or
# left unsupported): say so on every plan and update, while there is time to plan the upgrade.
WARN_DAYS = 60


def supported_versions(cloud: str, today: date) -> list[str]:
    """The minors a new cluster on `cloud` may use on `today`, newest first."""
    table = support_table(cloud)
    usable = [v for v, support in table.items() if support.standard_until >= today]
    return sorted(usable, key=lambda v: tuple(int(p) for p in v.split(".")), reverse=True)


def check_kubernetes_version(cfg: StackConfig, today: date) -> str | None:
    """Refuse a kubernetesVersion the stack's cloud no longer supports (ConfigError); return a warning
    when its support ends within WARN_DAYS; None otherwise. An existing cluster's version is its owner's."""
    if cfg.cloud not in ("aws", "gcp"):
        return None
    table = support_table(cfg.cloud)
    choices = supported_versions(cfg.cloud, today)
    source = f"support table read {table_read_on()} ({catalog_path('kubernetes_versions')})"
    support = table.get(cfg.kubernetes_version)
    if support is None:
        raise ConfigError("kubernetesVersion", cfg.kubernetes_version,
                          f"not a {cfg.cloud} version in the {source}; supported on {today}: {', '.join(choices)}",
                          cfg.stack, choices[0] if choices else None)
    if support.standard_until < today:
        raise ConfigError("kubernetesVersion", cfg.kubernetes_version,
                          f"{cfg.cloud} standard support for {support.version} ended {support.standard_until} "
                          f"({source}); supported on {today}: {', '.join(choices)}",
                          cfg.stack, choices[0] if choices else None)
    days_left = (support.standard_until - today).days
    if days_left <= WARN_DAYS:
        return (f"{cfg.cloud} standard support for Kubernetes {support.version} (qwen2vl:kubernetesVersion) ends "
                f"{support.standard_until}, in {days_left} days; the cloud then upgrades the cluster. Plan the "
                f"upgrade to one of {', '.join(v for v in choices if v != support.version) or 'a newer minor'}.")
    return None
