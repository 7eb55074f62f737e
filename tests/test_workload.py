"""Workload builders: schema-valid objects, coupled values that agree, manifests equal to the plan."""

import copy
import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from infra import outputs as output_names
from infra import pins
from infra.nodepool import gpu_pool_spec
from infra.platform.kuberay_crds import crd_folder
from infra.offline.engine import read_stack_config
from infra.workload.component import substitute
from infra.workload.manifests import render_manifests, workload_spec
from infra.workload.network import GKE_LOAD_BALANCER_RANGES
from infra.workload.objects import workload_objects
from infra.nodepool import GPU_RESOURCE
from tests.conftest import REPO_ROOT, STACKS, make_config

# The CRD of the pinned operator, as the program applies it (infra/platform/kuberay_crds/).
CRD = crd_folder() / "ray.io_rayservices.json"
NON_CORE = {"RayService", "PodMonitor", "PrometheusRule", "BackendConfig", "ManagedCertificate"}


@functools.lru_cache(maxsize=1)
def rayservice_schema():
    crd = json.loads(CRD.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return version["schema"]["openAPIV3Schema"]


def full_config(**extra):
    return make_config(allowedCidrs=["10.0.0.0/8"], allowedNamespaces=["apps"], ingressHost="llm.example.com",
                       ingressClass="gce", prometheusOperator=True, storageClass="gp3", **extra)


def objects_of(cfg):
    return workload_objects(workload_spec(cfg))


def by_name(objects):
    return {obj["metadata"]["name"]: obj for obj in objects}


def by_kind(objects):
    return {obj["kind"]: obj for obj in objects}


def worker_group(objects):
    return by_kind(objects)["RayService"]["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]


@pytest.mark.parametrize("cfg", [full_config(), *(read_stack_config(s) for s in STACKS)],
                         ids=["all-options", *STACKS])
def test_core_objects_validate_against_kubernetes_schemas(cfg):
    for obj in objects_of(cfg):
        if obj["kind"] in NON_CORE:
            continue
        kubernetes_validate.validate(obj, f"{cfg.kubernetes_version}.0", strict=True)


@pytest.mark.parametrize("cfg", [full_config(), *(read_stack_config(s) for s in STACKS)],
                         ids=["all-options", *STACKS])
def test_rayservice_validates_against_the_kuberay_crd(cfg):
    jsonschema.validate(by_kind(objects_of(cfg))["RayService"], rayservice_schema())


def test_the_crd_check_can_fail():
    broken = copy.deepcopy(by_kind(objects_of(full_config()))["RayService"])
    broken["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["replicas"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, rayservice_schema())
    broken_pvc = copy.deepcopy(by_kind(objects_of(full_config(modelStorage="readWriteMany")))["PersistentVolumeClaim"])
    broken_pvc["spec"]["accessMode"] = ["ReadWriteOnce"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken_pvc, f"{full_config().kubernetes_version}.0", strict=True)


@pytest.mark.parametrize("tp, gpu", [(4, "A100-80GB"), (2, "A100-80GB"), (8, "H100-80GB")])
def test_gpu_count_is_one_value_everywhere(tp, gpu):
    cfg = make_config(tensorParallelSize=tp, gpuType=gpu)
    objects = objects_of(cfg)
    worker = worker_group(objects)
    container = worker["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"][GPU_RESOURCE] == str(tp)
    assert container["resources"]["requests"][GPU_RESOURCE] == str(tp)
    assert worker["rayStartParams"]["num-gpus"] == str(tp)
    serve = yaml.safe_load(by_kind(objects)["RayService"]["spec"]["serveConfigV2"])
    deployment = serve["applications"][0]["deployments"][0]
    assert deployment["ray_actor_options"]["num_gpus"] == tp
    assert serve["applications"][0]["args"]["tensor_parallel_size"] == tp


def test_pool_taint_and_labels_match_the_workload():
    cfg = make_config(gpuType="L4")
    pool = gpu_pool_spec(cfg)
    pod = worker_group(objects_of(cfg))["template"]["spec"]
    assert pod["nodeSelector"] == pool.labels
    toleration = pod["tolerations"][0]
    assert (toleration["key"], toleration["effect"]) == (pool.taint["key"], pool.taint["effect"])
    assert toleration["operator"] == "Exists"


def test_selectors_match_the_pods_they_select():
    objects = by_kind(objects_of(full_config()))
    worker_labels = worker_group(objects.values())["template"]["metadata"]["labels"]
    policy = objects["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"]
    assert policy.items() <= worker_labels.items()
    head_labels = objects["RayService"]["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["metadata"]["labels"]
    assert policy.items() <= head_labels.items()
    monitor = objects["PodMonitor"]["spec"]["selector"]["matchLabels"]
    assert monitor.items() <= worker_labels.items() and monitor.items() <= head_labels.items()


def test_worker_mounts_shm_and_the_model_cache():
    objects = by_kind(objects_of(make_config()))
    pod = worker_group(objects.values())["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    assert volumes["model-cache"]["ephemeral"]["volumeClaimTemplate"]["spec"]["accessModes"] == ["ReadWriteOnce"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["dshm"] == "/dev/shm"
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["VLLM_WORKER_MULTIPROC_METHOD"]["value"] == "spawn"
    sources = volumes["credentials"]["projected"]["sources"]
    assert sources[0]["secret"]["name"] == workload_spec(make_config()).api_key_secret
    serve = yaml.safe_load(objects["RayService"]["spec"]["serveConfigV2"])
    key_file = serve["applications"][0]["args"]["api_key_file"]
    assert key_file == f"{mounts['credentials']}/{sources[0]['secret']['items'][0]['path']}"


def test_serve_config_carries_the_serving_settings():
    cfg = make_config(maxModelLen=4096, gpuMemoryUtilization=0.85, maxNumSeqs=16)
    serve = yaml.safe_load(by_kind(objects_of(cfg))["RayService"]["spec"]["serveConfigV2"])
    args = serve["applications"][0]["args"]
    assert args["served_model_name"] == "qwen2vl"
    assert (args["max_model_len"], args["gpu_memory_utilization"], args["max_num_seqs"]) == (4096, 0.85, 16)
    assert args["revision"] == cfg.model_revision


def test_the_ingress_limits_reach_the_replica():
    """maxRequestMib and maxImageMegapixels become the replica's ServerArgs (request_guard's limits); unset,
    they are the defaults in images/vllm/qwen2vl_serve/limits.py."""
    sys.path.insert(0, str(REPO_ROOT / "images" / "vllm"))
    from qwen2vl_serve import limits
    from qwen2vl_serve.server import ServerArgs

    def args_of(cfg):
        serve = yaml.safe_load(by_kind(objects_of(cfg))["RayService"]["spec"]["serveConfigV2"])
        return ServerArgs.from_mapping(serve["applications"][0]["args"])

    configured = args_of(make_config(maxRequestMib=8, maxImageMegapixels=12))
    assert (configured.max_request_bytes, configured.max_image_pixels) == (8 * 2**20, 12_000_000)
    default = args_of(make_config())
    assert default.max_request_bytes == limits.DEFAULT_MAX_REQUEST_MIB * 2**20 == 20 * 2**20
    assert default.max_image_pixels == limits.DEFAULT_MAX_IMAGE_MEGAPIXELS * 10**6 == 50 * 10**6


def ingress_policy(objects):
    return next(o for o in objects if o["kind"] == "NetworkPolicy" and "Ingress" in o["spec"]["policyTypes"])


def test_network_policy_admits_only_configured_clients():
    """Which connection each rule admits is in tests/test_pod.py; here: the configured sources (and, with the
    GKE Ingress, its load balancer's ranges), no others."""
    policy = ingress_policy(objects_of(full_config()))["spec"]
    sources = [src for rule in policy["ingress"] for src in rule["from"]]
    cidrs = [s["ipBlock"]["cidr"] for s in sources if "ipBlock" in s]
    assert cidrs == ["10.0.0.0/8", *GKE_LOAD_BALANCER_RANGES]
    namespaces = [s["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                  for s in sources if "namespaceSelector" in s]
    assert sorted(namespaces) == ["apps", "kuberay-system", "monitoring"]
    closed = ingress_policy(objects_of(make_config()))["spec"]
    closed_sources = [src for rule in closed["ingress"] for src in rule["from"]]
    assert not [s for s in closed_sources if "ipBlock" in s]


def test_smoke_job_name_changes_only_with_serving_inputs():
    def job_name(cfg):
        return by_kind(objects_of(cfg))["Job"]["metadata"]["name"]

    base = job_name(make_config())
    assert job_name(make_config(allowedCidrs=["10.0.0.0/8"])) == base
    assert job_name(make_config(maxModelLen=4096)) != base
    assert job_name(make_config(image="registry.example.com/qwen2vl-vllm:other")) != base


def _normalise(value):
    """Protobuf hands numbers back as floats; compare 3600 and 3600.0 as equal."""
    return json.loads(json.dumps(value), parse_float=lambda x: int(float(x)) if float(x).is_integer() else float(x))


@pytest.mark.parametrize("stack", STACKS)
def test_manifests_are_exactly_what_pulumi_registers(plan_of, stack):
    """Identical but for the image: Pulumi runs the pushed digest where the manifests name the build."""
    result = plan_of(stack)
    pushed = result.outputs[output_names.IMAGE]
    built = workload_spec(read_stack_config(stack)).image
    assert "@sha256:" in pushed
    registered = {(r.type.split(":")[-1], r.inputs["metadata"]["name"]): substitute(r.inputs, pushed, built)
                  for r in result.resources if r.type.startswith("kubernetes:") and r.custom
                  and "metadata" in r.inputs}
    rendered = [yaml.safe_load(text) for name, text in render_manifests(read_stack_config(stack)).items()
                if not name.endswith("kustomization.yaml")]
    assert rendered
    for obj in rendered:
        inputs = registered[(obj["kind"], obj["metadata"]["name"])]
        assert _normalise({k: v for k, v in inputs.items()}) == _normalise(obj)


def test_committed_manifests_are_current():
    proc = subprocess.run([sys.executable, "scripts/render.py", "--check"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_render_check_names_a_stale_file(tmp_path, monkeypatch):
    import scripts.render as render

    monkeypatch.setattr(render, "MANIFESTS", tmp_path)
    assert render.main(["--stack", "eval"]) == 0
    victim = next(tmp_path.glob("eval/*rayservice*.yaml"))
    victim.write_text(victim.read_text().replace("spawn", "fork"))
    assert render.main(["--stack", "eval", "--check"]) == 1


@pytest.mark.parametrize("stack", STACKS)
def test_kubectl_kustomize_builds_each_stack(stack):
    kubectl = shutil.which("kubectl") or str(Path(sys.executable).parent / "kubectl")
    proc = subprocess.run([kubectl, "kustomize", f"manifests/{stack}"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    kinds = [doc["kind"] for doc in yaml.safe_load_all(proc.stdout)]
    assert "RayService" in kinds and "NetworkPolicy" in kinds


def test_no_secret_material_in_manifests():
    for path in (REPO_ROOT / "manifests").rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["kind"] != "Secret", path
            # Only ConfigMaps carry data (the model lock, the dashboard); nothing carries stringData.
            assert "stringData" not in doc and (doc["kind"] == "ConfigMap" or "data" not in doc), path


RESOLVED_LOCK = {"repo": pins.MODEL_REPO, "revision": pins.MODEL_REVISION, "resolved": True,
                 "commit": pins.MODEL_REVISION + "0" * (40 - len(pins.MODEL_REVISION)),
                 "files": [{"path": "config.json", "size": 10, "sha256": "0" * 64}]}


def test_a_resolved_lock_fetches_and_verifies_before_vllm_starts():
    cfg = make_config(hubEndpoint="https://hf-mirror.example.com")
    spec = workload_spec(cfg, RESOLVED_LOCK)
    objects = by_kind(workload_objects(spec))
    lock_map = by_name(workload_objects(spec))[spec.model_lock_config_map]
    assert json.loads(lock_map["data"]["model.lock.json"])["commit"] == RESOLVED_LOCK["commit"]
    pod = worker_group(objects.values())["template"]["spec"]
    fetch = pod["initContainers"][0]
    assert fetch["command"][:4] == ["python", "-m", "qwen2vl_serve.model_files", "fetch"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["HF_HUB_OFFLINE"] == "1" and env["HF_ENDPOINT"] == "https://hf-mirror.example.com"
    serve = yaml.safe_load(objects["RayService"]["spec"]["serveConfigV2"])
    args = serve["applications"][0]["args"]
    assert args["model"] == fetch["command"][fetch["command"].index("--dir") + 1]
    assert "revision" not in args
    for obj in workload_objects(spec):
        if obj["kind"] not in NON_CORE:
            kubernetes_validate.validate(obj, f"{cfg.kubernetes_version}.0", strict=True)
    jsonschema.validate(objects["RayService"], rayservice_schema())


def test_without_a_lock_vllm_downloads_by_revision_and_modelscope_is_an_option():
    cfg = make_config(modelSource="modelscope")
    objects = by_kind(objects_of(cfg))
    assert workload_spec(cfg).model_lock_config_map not in by_name(objects_of(cfg))
    pod = worker_group(objects.values())["template"]["spec"]
    assert "initContainers" not in pod
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["VLLM_USE_MODELSCOPE"] == "True" and "HF_HUB_OFFLINE" not in env
    args = yaml.safe_load(objects["RayService"]["spec"]["serveConfigV2"])["applications"][0]["args"]
    assert args["revision"] == pins.MODEL_REVISION


@pytest.mark.parametrize("stack", STACKS)
def test_ray_and_vllm_logs_reach_kubectl_logs(stack):
    """Without RAY_LOG_TO_STDERR Ray keeps every process's output (the replica's, so vLLM's) in files under
    /tmp/ray, which `kubectl logs` never shows and the tmp volume's size limit can evict (review-k8s #8)."""
    spec = by_kind(objects_of(read_stack_config(stack)))["RayService"]["spec"]["rayClusterConfig"]
    containers = [spec["headGroupSpec"]["template"]["spec"]["containers"][0],
                  spec["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]]
    for container in containers:
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env.get("RAY_LOG_TO_STDERR") == "1", container["name"]
