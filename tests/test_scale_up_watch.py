"""The smoke gate stops waiting, naming the cause, when the node autoscaler says the GPU worker will get no
node (FailedScaleUp at once, NotTriggerScaleUp once it lasted), against the fake Kubernetes API of
tests/test_upgrades.py; and the smoke Job's Role allows exactly the reads it makes."""

import urllib.parse

import pytest

from tests.test_upgrades import FakeKubeApi, active_cluster, kind, rendered
from qwen2vl_serve import scale_up_watch  # noqa: E402 (tests.test_upgrades puts images/vllm on the path)

NS = "qwen2vl"
WORKER = "qwen2vl-raycluster-abcde-gpu-worker-xyz12"
STOCKOUT = ("Node scale up in zones us-central1-a associated with this pod failed: GCE out of resources. "
            "Pod is at risk of not being scheduled.")
# What CA on EKS records once the Auto Scaling group could not launch the node (no vCPU quota, no capacity).
BACKOFF = "pod didn't trigger scale-up: 1 in backoff after failed scale-up, 1 node(s) didn't match Pod's node affinity"


def pods_path():
    query = urllib.parse.urlencode({"labelSelector": scale_up_watch.WORKER_SELECTOR,
                                    "fieldSelector": "status.phase=Pending"})
    return f"/api/v1/namespaces/{NS}/pods?{query}"


def events_path(pod):
    query = urllib.parse.urlencode({"fieldSelector": f"involvedObject.kind=Pod,involvedObject.name={pod}"})
    return f"/api/v1/namespaces/{NS}/events?{query}"


def event(reason, message, first="2026-12-04T11:00:00Z", last="2026-12-04T11:00:00Z"):
    return {"reason": reason, "message": message, "firstTimestamp": first, "lastTimestamp": last, "count": 1}


def pending_worker(api, *events):
    api.state[pods_path()] = {"items": [{"metadata": {"name": WORKER}}]}
    api.state[events_path(WORKER)] = {"items": [event("TriggeredScaleUp", "pod triggered scale-up"), *events]}


@pytest.mark.parametrize("events, cause", [
    ([event("FailedScaleUp", STOCKOUT)], "GCE out of resources"),
    ([event("NotTriggerScaleUp", BACKOFF)], "in backoff after failed scale-up"),
    ([event("NotTriggerScaleUp", "pod didn't trigger scale-up: 1 max node group size reached",
            last="2026-12-04T11:06:00Z")], "max node group size reached"),
])
def test_the_gate_fails_at_once_naming_the_autoscalers_reason(events, cause):
    with FakeKubeApi() as api:
        api.serve(active="", pending="c-new", images={}, selected=None)
        pending_worker(api, *events)
        kube = active_cluster.KubeApi(api.url, "t0ken", None, timeout_s=5)
        looks = []
        seen = active_cluster.wait_active(kube, NS, "qwen2vl", "qwen2vl-openai", "img@new", 4800, 0,
                                          clock=lambda: float(len(looks)), pause=looks.append,
                                          give_up=scale_up_watch.watcher(kube, NS))
    assert not seen.ok and cause in seen.reason and WORKER in seen.reason
    assert looks == []  # the first look decided, not the 80-minute window


def test_a_short_not_triggered_spell_or_no_verdict_keeps_waiting():
    with FakeKubeApi() as api:
        api.serve(active="", pending="c-new", images={}, selected=None)
        pending_worker(api, event("NotTriggerScaleUp", "pod didn't trigger scale-up: node group not yet known",
                                  last="2026-12-04T11:01:00Z"))
        kube = active_cluster.KubeApi(api.url, "t0ken", None, timeout_s=5)
        assert scale_up_watch.scale_up_failure(kube, NS) is None
        api.state[pods_path()] = {"items": []}  # the worker got its node
        assert scale_up_watch.scale_up_failure(kube, NS) is None
        del api.state[pods_path()]  # an API that refuses the read never ends the wait early
        assert scale_up_watch.watcher(kube, NS)() is None


def test_the_gate_in_the_job_uses_the_watch_and_its_role_allows_the_lists():
    with FakeKubeApi() as api:
        api.serve(active="", pending="c-new", images={}, selected=None)
        pending_worker(api, event("FailedScaleUp", STOCKOUT))
        kube = active_cluster.KubeApi(api.url, "t0ken", None, timeout_s=5)
        lines = []
        code = active_cluster.main(["--rayservice", f"{NS}/qwen2vl", "--service", "qwen2vl-openai", "--image",
                                    "img@new", "--wait", "4800", "--poll", "0"], api=kube, printer=lines.append)
        listed = [path.split("?")[0] for path in api.paths if "?" in path]
    assert code == 1 and "GCE out of resources" in "\n".join(lines)
    rules = kind(rendered("eval"), "Role")[0]["rules"]
    for path in set(listed):
        resource = path.rstrip("/").split("/")[-1]
        assert any("" in r["apiGroups"] and resource in r["resources"] and "list" in r["verbs"] for r in rules), path
