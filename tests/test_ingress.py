"""ingressHost: an HTTPS Ingress that GKE's load balancer can serve (class, TLS, a health check on the open
path, the load balancer's ranges admitted), or a ConfigError naming the key before any resource."""

from __future__ import annotations

import json

import pytest

from infra.config import ConfigError
from infra.offline.engine import run_plan
from infra.workload.manifests import workload_spec
from infra.workload.network import GKE_LOAD_BALANCER_RANGES, HEALTH_PATH
from infra.workload.objects import workload_objects
from tests.conftest import REPO_ROOT, make_config, write_stack

GCP = {"cloud": "gcp", "region": "us-central1", "gcpProject": "my-gpu-project", "gpuType": "A100-80GB"}


def kinds(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def test_the_health_check_asks_the_path_the_app_answers_without_the_key(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "images" / "vllm"))
    from qwen2vl_serve.access import OPEN_PATHS
    assert ("GET", HEALTH_PATH) in OPEN_PATHS


@pytest.mark.parametrize("tls", [None, "qwen2vl-tls"])
def test_a_gke_ingress_has_a_class_tls_a_health_check_and_its_load_balancer_admitted(tls):
    extra = {"ingressTlsSecret": tls} if tls else {}
    objects = workload_objects(workload_spec(make_config(**GCP, ingressHost="llm.example.com", **extra)))
    (ingress,) = kinds(objects, "Ingress")
    annotations = ingress["metadata"]["annotations"]
    # GKE's controller acts on the annotation, not on spec.ingressClassName.
    assert annotations["kubernetes.io/ingress.class"] == "gce"
    assert annotations["kubernetes.io/ingress.allow-http"] == "false"
    service = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    if tls:
        assert ingress["spec"]["tls"] == [{"hosts": ["llm.example.com"], "secretName": tls}]
        assert not kinds(objects, "ManagedCertificate")
    else:
        (certificate,) = kinds(objects, "ManagedCertificate")
        assert certificate["spec"]["domains"] == ["llm.example.com"]
        assert annotations["networking.gke.io/managed-certificates"] == certificate["metadata"]["name"]
    (backend_config,) = kinds(objects, "BackendConfig")
    check = backend_config["spec"]["healthCheck"]
    assert (check["requestPath"], check["port"]) == (HEALTH_PATH, service["port"]["number"])
    assert backend_config["spec"]["timeoutSec"] >= 600
    serve = kinds(objects, "RayService")[0]["spec"]["serveService"]["metadata"]
    assert json.loads(serve["annotations"]["cloud.google.com/backend-config"]) == {"default": backend_config["metadata"]["name"]}
    assert serve["name"] == service["name"]
    policy = next(o for o in kinds(objects, "NetworkPolicy") if "ingress" in o["spec"])
    admitted = [rule for rule in policy["spec"]["ingress"]
                if {p.get("ipBlock", {}).get("cidr") for p in rule["from"]} == set(GKE_LOAD_BALANCER_RANGES)]
    assert admitted and admitted[0]["ports"] == [{"protocol": "TCP", "port": service["port"]["number"]}]


def test_no_ingress_no_load_balancer_rule():
    objects = workload_objects(workload_spec(make_config(**GCP)))
    assert not kinds(objects, "Ingress") and not kinds(objects, "BackendConfig")
    policy = next(o for o in kinds(objects, "NetworkPolicy") if "ingress" in o["spec"])
    cidrs = {p.get("ipBlock", {}).get("cidr") for rule in policy["spec"]["ingress"] for p in rule["from"]}
    assert not cidrs & set(GKE_LOAD_BALANCER_RANGES)


@pytest.mark.parametrize("raw,key", [
    ({"cloud": "aws", "region": "us-east-1", "gpuType": "L4", "ingressHost": "llm.example.com"}, "ingressHost"),
    ({"ingressHost": "llm.example.com"}, "ingressClass"),
    ({"ingressClass": "nginx", "ingressHost": "llm.example.com"}, "ingressClass"),
    ({"ingressTlsSecret": "qwen2vl-tls"}, "ingressTlsSecret"),
])
def test_an_ingress_the_stack_cannot_make_work_is_refused_by_name(raw, key):
    with pytest.raises(ConfigError) as error:
        make_config(**raw)
    assert error.value.key == key
    assert "pulumi config" in str(error.value)


def test_a_refused_ingress_registers_no_resource(tmp_path):
    write_stack(tmp_path, "edge", {"qwen2vl:cloud": "aws", "qwen2vl:region": "us-east-1", "qwen2vl:gpuType": "L4",
                                   "qwen2vl:ingressHost": "llm.example.com"})
    plan = run_plan("edge", tmp_path)
    assert not plan.ok and "qwen2vl:ingressHost" in plan.error
    assert [r for r in plan.resources if r.custom] == []


def test_the_plan_registers_the_gke_ingress_objects(tmp_path):
    write_stack(tmp_path, "web", {**{f"qwen2vl:{k}": v for k, v in GCP.items()}, "qwen2vl:ingressHost": "llm.example.com"})
    plan = run_plan("web", tmp_path)
    assert plan.ok, plan.error
    types = {r.type for r in plan.resources}
    assert {"kubernetes:cloud.google.com/v1:BackendConfig", "kubernetes:networking.gke.io/v1:ManagedCertificate",
            "kubernetes:networking.k8s.io/v1:Ingress"} <= types
