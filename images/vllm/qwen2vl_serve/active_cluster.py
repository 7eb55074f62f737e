"""Waits until the endpoint serves from the cluster this deploy made, standard library only (it runs in the
smoke Job's init container, before the smoke checks talk to the endpoint).

KubeRay 1.4 keeps the old RayCluster serving until the new one's Serve apps are RUNNING, and under
upgradeStrategy None it never replaces it at all, so "the endpoint answers" proves nothing about a new
image. This check passes only when, through the Kubernetes API:
- the RayService has observed its latest spec and has an active cluster and no pending one;
- the active RayCluster runs the expected image in its head and every worker group;
- the endpoint Service selects exactly that cluster (ray.io/cluster), so the smoke checks that follow
  are answered by it;
- every Serve application of that cluster is RUNNING with every deployment HEALTHY (KubeRay copies
  them from the dashboard, rayservice_controller.go getAndCheckServeStatus), so a new serveConfigV2 has
  been applied at its target replicas: on a stack scaled to zero that is a whole cold start, and on a
  warm one no replica of the old config is left answering;
- and that verdict comes from a look at least SETTLE_SECONDS after the gate first saw the new
  generation observed (see SETTLE_SECONDS).

    python -m qwen2vl_serve.active_cluster --rayservice NS/NAME --service NAME (--image REF | --image-env VAR) --wait SECONDS

The manifests pass the image in an environment variable (--image-env): kustomize's image override rewrites
it through a replacement, never an argument.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.error
from dataclasses import dataclass

from qwen2vl_serve import scale_up_watch
from qwen2vl_serve.kube_client import KubeApi

CLUSTER_LABEL = "ray.io/cluster"
# KubeRay 1.4.2 reads the Serve status before it submits a changed serveConfigV2 (reconcileServe,
# rayservice_controller.go:1030-1044), so the first status it writes for a new generation can still be
# the old config's RUNNING. Ray 2.38 marks the application DEPLOYING the moment it takes a new config
# (serve/_private/application_state.py apply_app_config :385-475 via _set_target_state :227-250), and
# KubeRay rereads it every 2 s (ServiceDefaultRequeueDuration, :40, :210). Fifteen such rounds later the
# status is the new config's.
SETTLE_SECONDS = 30.0


@dataclass(frozen=True)
class Observation:
    ok: bool
    reason: str
    # Whether the operator had observed the RayService's latest generation at this look.
    observed: bool = False


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
        return Observation(False, f"no active cluster yet (pending: {pending or 'none'})", True)
    if pending:
        return Observation(False, f"cluster {pending} is still pending next to the active {active}", True)
    images = cluster_images(api.get(f"{ray}/rayclusters/{active}"))
    stale = sorted({i for i in images if i != image})
    if stale:
        return Observation(False, f"the active cluster {active} runs {', '.join(stale)}, not {image}", True)
    selected = (api.get(f"/api/v1/namespaces/{namespace}/services/{service}").get("spec", {})
                .get("selector") or {}).get(CLUSTER_LABEL)
    if selected != active:
        return Observation(False, f"Service {service} selects cluster {selected}, not the active {active}", True)
    apps = (status.get("activeServiceStatus") or {}).get("applicationStatuses") or {}
    if not apps:
        return Observation(False, f"the active cluster {active} reports no Serve application yet", True)
    for name, app in sorted(apps.items()):
        if app.get("status") != "RUNNING":
            return Observation(False, f"Serve application {name} is {app.get('status') or 'without a status'}"
                               + (f": {app['message']}" if app.get("message") else ""), True)
        unsettled = sorted(f"{deployment} {entry.get('status')}" for deployment, entry in
                           (app.get("serveDeploymentStatuses") or {}).items() if entry.get("status") != "HEALTHY")
        if unsettled:
            return Observation(False, f"Serve application {name} is not at its target replicas yet: "
                               f"{', '.join(unsettled)} (from zero replicas that is a whole cold start)", True)
    return Observation(True, f"Service {service} selects the active cluster {active}, which runs {image} "
                       f"and serves the current config", True)


def wait_active(api: KubeApi, namespace: str, rayservice: str, service: str, image: str, seconds: float,
                poll_s: float = 10.0, clock=time.monotonic, pause=time.sleep,
                settle_s: float = SETTLE_SECONDS, give_up=None) -> Observation:
    """Observes until the check passes or `seconds` run out, or `give_up` names a reason to stop (a GPU node
    the autoscaler cannot add: scale_up_watch.py); the result names what was last seen. A pass counts only
    `settle_s` after the first look at which the new generation was observed."""
    deadline = clock() + seconds
    observed_since = None
    while True:
        try:
            seen = observe(api, namespace, rayservice, service, image)
        except (urllib.error.URLError, OSError, KeyError, IndexError, ValueError) as error:
            seen = Observation(False, f"the Kubernetes API answered: {error}")
        now = clock()
        if seen.observed and observed_since is None:
            observed_since = now
        if seen.ok and now - observed_since < settle_s:
            seen = Observation(False, f"{seen.reason}, but KubeRay may not have reread the Serve status since it "
                               f"submitted the config (waiting {settle_s:.0f} s)", True)
        if seen.ok or now >= deadline:
            return seen
        if give_up and (reason := give_up()):
            return Observation(False, reason)
        pause(poll_s)


def main(argv: list[str] | None = None, api: KubeApi | None = None, printer=print) -> int:
    parser = argparse.ArgumentParser(description="Wait until the endpoint serves from the deployed image.")
    parser.add_argument("--rayservice", required=True, help="NAMESPACE/NAME of the RayService")
    parser.add_argument("--service", required=True, help="the endpoint Service (RayService spec.serveService)")
    image = parser.add_mutually_exclusive_group(required=True)
    image.add_argument("--image", help="the image this deploy runs")
    image.add_argument("--image-env", help="the environment variable that holds the image this deploy runs")
    parser.add_argument("--wait", type=float, required=True, help="seconds to wait at most")
    parser.add_argument("--poll", type=float, default=10.0)
    args = parser.parse_args(argv)
    namespace, _, name = args.rayservice.partition("/")
    if not namespace or not name:
        printer(f"error: --rayservice must be NAMESPACE/NAME, got {args.rayservice!r}")
        return 2
    expected = args.image or os.environ.get(args.image_env, "")
    if not expected:
        printer(f"error: the environment variable {args.image_env} (--image-env) is not set")
        return 2
    api = api or KubeApi.from_files()
    seen = wait_active(api, namespace, name, args.service, expected, args.wait, args.poll,
                       give_up=scale_up_watch.watcher(api, namespace))
    if not seen.ok:
        printer(f"active cluster check failed after {args.wait:.0f} s: {seen.reason}")
        return 1
    printer(seen.reason)
    return 0


if __name__ == "__main__":
    sys.exit(main())
