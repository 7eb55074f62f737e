"""Waits until the endpoint serves from the cluster this deploy made, standard library only (it runs in the
smoke Job's init container, before the smoke checks talk to the endpoint).

KubeRay 1.4 keeps the old RayCluster serving until the new one's Serve apps are RUNNING, and under
upgradeStrategy None it never replaces it at all, so "the endpoint answers" proves nothing about a new
image. This check passes only when, through the Kubernetes API:
- the RayService has observed its latest spec and has an active cluster and no pending one;
- the active RayCluster runs the expected image in its head and every worker group;
- the endpoint Service selects exactly that cluster (ray.io/cluster), so the smoke checks that follow
  are answered by it.

    python -m qwen2vl_serve.active_cluster --rayservice NS/NAME --service NAME --image REF --wait SECONDS
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
from dataclasses import dataclass

from qwen2vl_serve import scale_up_watch
from qwen2vl_serve.kube_client import KubeApi

CLUSTER_LABEL = "ray.io/cluster"


@dataclass(frozen=True)
class Observation:
    ok: bool
    reason: str


def cluster_images(cluster: dict) -> list[str]:
    """The Ray container's image of the head and of every worker group (KubeRay runs container 0 as Ray)."""
    spec = cluster.get("spec", {})
    groups = [spec.get("headGroupSpec", {})] + list(spec.get("workerGroupSpecs") or [])
    return [group["template"]["spec"]["containers"][0]["image"] for group in groups]


def observe(api: KubeApi, namespace: str, rayservice: str, service: str, image: str) -> Observation:
    """One look at the RayService, its active cluster and the endpoint Service."""
    ray = f"/apis/ray.io/v1/namespaces/{namespace}"
    svc = api.get(f"{ray}/rayservices/{rayservice}")
    status = svc.get("status") or {}
    generation, observed = svc["metadata"].get("generation", 0), status.get("observedGeneration", 0)
    if observed < generation:
        return Observation(False, f"the operator has not yet observed generation {generation} (at {observed})")
    active = (status.get("activeServiceStatus") or {}).get("rayClusterName")
    pending = (status.get("pendingServiceStatus") or {}).get("rayClusterName")
    if not active:
        return Observation(False, f"no active cluster yet (pending: {pending or 'none'})")
    if pending:
        return Observation(False, f"cluster {pending} is still pending next to the active {active}")
    images = cluster_images(api.get(f"{ray}/rayclusters/{active}"))
    stale = sorted({i for i in images if i != image})
    if stale:
        return Observation(False, f"the active cluster {active} runs {', '.join(stale)}, not {image}")
    selected = (api.get(f"/api/v1/namespaces/{namespace}/services/{service}").get("spec", {})
                .get("selector") or {}).get(CLUSTER_LABEL)
    if selected != active:
        return Observation(False, f"Service {service} selects cluster {selected}, not the active {active}")
    return Observation(True, f"Service {service} selects the active cluster {active}, which runs {image}")


def wait_active(api: KubeApi, namespace: str, rayservice: str, service: str, image: str, seconds: float,
                poll_s: float = 10.0, clock=time.monotonic, pause=time.sleep, give_up=None) -> Observation:
    """Observes until the check passes or `seconds` run out, or `give_up` names a reason to stop (a GPU node
    the autoscaler cannot add: scale_up_watch.py); the result names what was last seen."""
    deadline = clock() + seconds
    while True:
        try:
            seen = observe(api, namespace, rayservice, service, image)
        except (urllib.error.URLError, OSError, KeyError, IndexError, ValueError) as error:
            seen = Observation(False, f"the Kubernetes API answered: {error}")
        if seen.ok or clock() >= deadline:
            return seen
        if give_up and (reason := give_up()):
            return Observation(False, reason)
        pause(poll_s)


def main(argv: list[str] | None = None, api: KubeApi | None = None, printer=print) -> int:
    parser = argparse.ArgumentParser(description="Wait until the endpoint serves from the deployed image.")
    parser.add_argument("--rayservice", required=True, help="NAMESPACE/NAME of the RayService")
    parser.add_argument("--service", required=True, help="the endpoint Service (RayService spec.serveService)")
    parser.add_argument("--image", required=True, help="the image this deploy runs")
    parser.add_argument("--wait", type=float, required=True, help="seconds to wait at most")
    parser.add_argument("--poll", type=float, default=10.0)
    args = parser.parse_args(argv)
    namespace, _, name = args.rayservice.partition("/")
    if not namespace or not name:
        printer(f"error: --rayservice must be NAMESPACE/NAME, got {args.rayservice!r}")
        return 2
    api = api or KubeApi.from_files()
    seen = wait_active(api, namespace, name, args.service, args.image, args.wait, args.poll,
                       give_up=scale_up_watch.watcher(api, namespace))
    if not seen.ok:
        printer(f"active cluster check failed after {args.wait:.0f} s: {seen.reason}")
        return 1
    printer(seen.reason)
    return 0


if __name__ == "__main__":
    sys.exit(main())
