"""What happens when Kubernetes deletes a Ray pod: the preStop hook that lets Serve drain it
(images/vllm/qwen2vl_serve/drain.py has the mechanism and the Ray 2.38.0 / KubeRay 1.4.2 facts behind it) and
the grace period that bounds the hook. Kubernetes runs preStop before SIGTERM, and SIGKILLs the container
when terminationGracePeriodSeconds runs out, hook included."""

from __future__ import annotations

from infra.workload.serve_config import GRACEFUL_SHUTDOWN_TIMEOUT_S, HEALTH_CHECK_PERIOD_S
from infra.workload.spec import DASHBOARD_PORT, VLLM_METRICS_PORT

# Serve stops a replica after this many failed health checks in a row (Ray 2.38.0
# serve/_private/constants.py:137), one per HEALTH_CHECK_PERIOD_S.
UNHEALTHY_THRESHOLD = 3
NOTICE_S = UNHEALTHY_THRESHOLD * HEALTH_CHECK_PERIOD_S
# The controller's loop and the checks' own duration come on top of the periods.
NOTICE_SLACK_S = 15
# The worker's hook waits for Serve to notice, then for the replica's graceful stop (its requests drain
# for up to GRACEFUL_SHUTDOWN_TIMEOUT_S, then it is killed and vLLM stopped).
DRAIN_DEADLINE_S = NOTICE_S + NOTICE_SLACK_S + GRACEFUL_SHUTDOWN_TIMEOUT_S
# After the hook: SIGTERM, and time for Ray's processes to exit before SIGKILL.
EXIT_S = 20
TERMINATION_GRACE_SECONDS = DRAIN_DEADLINE_S + EXIT_S
# In the worker's /tmp emptyDir, written by the hook and read by the replica (same container).
DRAIN_MARKER_PATH = "/tmp/qwen2vl-pod-deleted"


def drain_env() -> list[dict]:
    """The worker container's environment entry that tells the replica where the hook's marker is."""
    return [{"name": "QWEN2VL_DRAIN_MARKER", "value": DRAIN_MARKER_PATH}]


def _hook(*args: str) -> dict:
    return {"preStop": {"exec": {"command": ["python", "-m", "qwen2vl_serve.drain", *args]}}}


def worker_lifecycle() -> dict:
    return _hook("worker", "--deadline", str(DRAIN_DEADLINE_S),
                 "--metrics-url", f"http://127.0.0.1:{VLLM_METRICS_PORT}/metrics")


def head_lifecycle() -> dict:
    return _hook("head", "--deadline", str(DRAIN_DEADLINE_S), "--notice", str(NOTICE_S + NOTICE_SLACK_S),
                 "--applications-url", f"http://127.0.0.1:{DASHBOARD_PORT}/api/serve/applications/")
