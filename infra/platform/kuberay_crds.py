"""The KubeRay CRDs of the pinned operator, as plain objects (no Pulumi import).

Helm installs a chart's crds/ folder on the first install and never again: "There is no support at this
time for upgrading or deleting CRDs using Helm" (https://helm.sh/docs/chart_best_practices/custom_resource_definitions/,
"Method 1: Let Helm Do It For You"). A chart bump would then run a new operator against the old schemas,
which silently prune the new fields. So the program applies the CRDs itself, from the files of the operator's
own version (infra/platform/kuberay_crds/v<version>/, the release's config/crd/bases as JSON, written by
scripts/vendor_kuberay_crds.py), and tells the chart not to install them (skip_crds)."""

from __future__ import annotations

import json
from pathlib import Path

from infra import pins

CRD_FOLDER = Path(__file__).with_name("kuberay_crds")
# pulumi-kubernetes v4 applies server-side, so it adopts a CRD an earlier Helm install created (an upsert);
# patchForce takes over the fields Helm's field manager owns instead of failing on the conflict
# (https://www.pulumi.com/registry/packages/kubernetes/how-to-guides/managing-resources-with-server-side-apply/).
ADOPT_ANNOTATION = {"pulumi.com/patchForce": "true"}


def crd_folder(version: str = pins.KUBERAY_OPERATOR_CHART_VERSION) -> Path:
    folder = CRD_FOLDER / f"v{version}"
    if not folder.is_dir() or not any(folder.glob("*.json")):
        raise FileNotFoundError(
            f"no KubeRay CRDs for operator {version} in {folder}: run scripts/vendor_kuberay_crds.py on the "
            f"ray.io_*.yaml of that release (github.com/ray-project/kuberay, tag v{version}, "
            f"ray-operator/config/crd/bases)")
    return folder


def kuberay_crds(version: str = pins.KUBERAY_OPERATOR_CHART_VERSION) -> list[dict]:
    """RayCluster, RayJob and RayService, as the operator of `version` expects them (its chart installs all
    three; the operator watches all three kinds)."""
    crds = []
    for path in sorted(crd_folder(version).glob("*.json")):
        crd = json.loads(path.read_text())
        metadata = crd["metadata"]
        metadata["annotations"] = {**(metadata.get("annotations") or {}), **ADOPT_ANNOTATION}
        metadata["labels"] = {**(metadata.get("labels") or {}), "app.kubernetes.io/version": version}
        crds.append(crd)
    return crds
