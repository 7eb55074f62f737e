"""What a Ray pod does when Kubernetes deletes it: the containers' preStop hook. Standard library only.

Without it, deleting a pod (a node drain, a spot reclaim, the old cluster after a NewCluster upgrade) cuts
every request in flight at the grace period's SIGKILL: KubeRay 1.4.2 adds no preStop hook
(ray-operator/controllers/ray/common/pod.go), the container's `ray start --block` does not drain on SIGTERM
(ray/scripts/scripts.py:984-1030 in Ray 2.38.0 only watches its children), and Serve 2.38.0 never learns
that the node goes away: its node-draining hook returns no nodes (serve/_private/default_impl.py:23-24 creates a
DefaultClusterNodeInfoCache, whose get_draining_nodes returns {}: cluster_node_info_cache.py:93-98), so it neither moves the replica (deployment_state.py:2233-2288)
nor drains the node's proxy. Kubernetes runs preStop before it sends SIGTERM, inside
terminationGracePeriodSeconds, so Ray and the replica keep serving while the hook runs.

- `worker`: writes the marker file named by $QWEN2VL_DRAIN_MARKER. The replica's check_health then fails; after
  REPLICA_HEALTH_CHECK_UNHEALTHY_THRESHOLD (3) failures Serve stops it gracefully
  (deployment_state.py:2080-2107, graceful unless RAY_SERVE_FORCE_STOP_UNHEALTHY_REPLICAS): the replica
  leaves every proxy's routing, so new requests go to other replicas, and it waits for its ongoing
  requests (replica.py:707-729) up to graceful_shutdown_timeout_s before its __del__ stops vLLM. A
  replacement Serve places on this pod refuses to start (app.py), so it goes elsewhere. New connections
  stop reaching this pod's own proxy as soon as it is Terminating (Kubernetes takes terminating pods out of
  a Service's ready endpoints). The hook returns when the replica is gone (its metrics port no longer
  answers) or at its deadline.
- `head`: the head holds the Serve controller, the GCS and a proxy that the draining replicas still need.
  When the whole cluster goes (KubeRay deletes the old RayCluster 60 s after an upgrade switched traffic,
  rayservice_controller.go:41,562-580), the head waits while replicas drain: until none is RUNNING,
  STOPPING or PENDING_MIGRATION, after one was seen STOPPING. If none starts stopping within
  `--notice` seconds, only the head is being deleted and it returns at once.

    python -m qwen2vl_serve.drain worker --deadline 105 --metrics-url http://127.0.0.1:8081/metrics
    python -m qwen2vl_serve.drain head --deadline 105 --notice 45 \
        --applications-url http://127.0.0.1:8265/api/serve/applications/
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

# The marker's path, set in the worker container's environment (infra/workload/rayservice.py): the replica and
# the hook run in the same container and share its /tmp. Unset (a test machine's Ray), nothing drains.
DRAIN_MARKER_ENV = "QWEN2VL_DRAIN_MARKER"
# Replica states of Ray 2.38's Serve (serve/_private/common.py:109-115) that still serve or drain requests.
SERVING_STATES = {"RUNNING", "STOPPING", "PENDING_MIGRATION"}
POLL_S = 2.0


def drain_marker() -> Path | None:
    path = os.environ.get(DRAIN_MARKER_ENV)
    return Path(path) if path else None


def draining() -> bool:
    """Whether this pod is being deleted (the preStop hook has run)."""
    marker = drain_marker()
    return marker is not None and marker.exists()


def replica_answers(metrics_url: str, timeout_s: float = 5.0) -> bool:
    """Whether this pod's replica still runs: its metrics endpoint answers at all (503 while vLLM loads)."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=timeout_s):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def replica_states(applications_url: str, timeout_s: float = 5.0) -> list[str] | None:
    """States of every replica of every Serve application, from the dashboard's REST API (Ray 2.38
    ServeInstanceDetails, serve/schema.py:1035-1070: applications.*.deployments.*.replicas[].state);
    None when the dashboard does not answer."""
    try:
        with urllib.request.urlopen(applications_url, timeout=timeout_s) as answer:
            details = json.load(answer)
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return [replica.get("state") for app in (details.get("applications") or {}).values()
            for deployment in (app.get("deployments") or {}).values() for replica in deployment.get("replicas") or []]


def drain_worker(metrics_url: str, deadline_s: float, marker: Path,
                 answers: Callable[[str], bool] = replica_answers, clock=time.monotonic, sleep=time.sleep) -> str:
    marker.touch()
    end = clock() + deadline_s
    while clock() < end:
        if not answers(metrics_url):
            return "the replica is gone"
        sleep(POLL_S)
    return f"the replica still answered after {deadline_s:.0f} s"


def drain_head(applications_url: str, deadline_s: float, notice_s: float,
               states: Callable[[str], list[str] | None] = replica_states, clock=time.monotonic,
               sleep=time.sleep) -> str:
    start = clock()
    stopping_seen = False
    while clock() < start + deadline_s:
        current = states(applications_url)
        if current is None:
            return "Serve does not answer"
        stopping_seen = stopping_seen or "STOPPING" in current
        if stopping_seen and not SERVING_STATES & set(current):
            return "every replica has drained"
        if not stopping_seen and clock() >= start + notice_s:
            return f"no replica started draining within {notice_s:.0f} s: only the head is deleted"
        sleep(POLL_S)
    return f"replicas still served after {deadline_s:.0f} s"


def main(argv: list[str] | None = None, printer=print) -> int:
    p = argparse.ArgumentParser(description="preStop hook of a Ray pod: let Serve drain before the pod goes.")
    p.add_argument("role", choices=("worker", "head"))
    p.add_argument("--deadline", type=float, required=True, help="seconds to wait at most")
    p.add_argument("--notice", type=float, default=45.0,
                   help="head: seconds for a replica to start draining before the head gives up waiting")
    p.add_argument("--metrics-url", help="worker: the replica's metrics endpoint")
    p.add_argument("--applications-url", help="head: Serve's REST API, /api/serve/applications/")
    args = p.parse_args(argv)
    needed = "--metrics-url" if args.role == "worker" else "--applications-url"
    if getattr(args, needed[2:].replace("-", "_")) is None:
        p.error(f"{args.role} needs {needed}")
    if args.role == "worker":
        marker = drain_marker()
        if marker is None:
            printer(f"preStop (worker): {DRAIN_MARKER_ENV} is not set, so the replica cannot be told to drain")
            return 1
        outcome = drain_worker(args.metrics_url, args.deadline, marker)
    else:
        outcome = drain_head(args.applications_url, args.deadline, args.notice)
    printer(f"preStop ({args.role}): {outcome}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
