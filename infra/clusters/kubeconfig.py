"""Kubeconfigs built as data: one cluster, one user that authenticates through an exec plugin."""

from __future__ import annotations

import yaml


def exec_kubeconfig(name: str, server: str, ca_data: str, exec_user: dict) -> str:
    """No long-lived credential inside: the exec plugin fetches a short-lived token on each use."""
    return yaml.safe_dump({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority-data": ca_data}}],
        "users": [{"name": name, "user": {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1",
                                                    **exec_user}}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }, sort_keys=False)
