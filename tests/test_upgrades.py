"""Upgrades, scale-out and scale-to-zero under KubeRay 1.4.2, checked on the rendered objects of every stack:
the endpoint follows the active cluster, the upgrade strategy matches the GPU pool, one model copy per
worker, autoscaling bounds equal the node bounds, no deprecated fields (review-k8s #5, #6, #7, #11, #12, #16)."""

import copy
import functools
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jsonschema
import kubernetes_validate
import pytest
import yaml

from infra.config import ConfigError
from infra.nodepool import gpu_pool_spec, replicas_per_node
from infra.offline.engine import read_stack_config
from infra.workload.autoscaling import NODE_BOUNDS_ANNOTATION, SERVICE_ACCOUNT_DIR
from infra.workload.component import CLUSTER_CONFIG_PATH, rayservice_options
from infra.workload.manifests import render_manifests, workload_spec
from infra.workload.objects import workload_objects
from infra.workload.smoke_job import WAIT_FOR_READY_SECONDS, active_deadline_seconds, wait_for_active_seconds
from infra.workload.upgrade import NEW_CLUSTER, RECREATE, serve_max_replicas, upgrade_plan
from infra.workload import upgrade
from tests.conftest import REPO_ROOT, STACKS, make_config
from tests.test_workload import rayservice_schema as load_rayservice_schema

sys.path.insert(0, str(REPO_ROOT / "images" / "vllm"))
from qwen2vl_serve import active_cluster  # noqa: E402

# What each committed stack must get, from its pool: prod (1..2 nodes) can hold a second cluster.
EXPECTED_STRATEGY = {"eval": RECREATE, "staging": RECREATE, "prod": NEW_CLUSTER, "local": RECREATE}
DEPRECATED = ("serviceUnhealthySecondThreshold", "deploymentUnhealthySecondThreshold")


# Parsing the 17 000-line CRD takes seconds: once per session.
rayservice_schema = functools.lru_cache(maxsize=1)(load_rayservice_schema)


@functools.lru_cache(maxsize=None)
def _rendered_text(stack):
    return tuple(text for name, text in render_manifests(read_stack_config(stack)).items()
                 if not name.endswith("kustomization.yaml"))


def rendered(stack):
    """The committed stack's objects as `scripts/render.py` writes them (YAML text parsed back)."""
    return [yaml.safe_load(text) for text in _rendered_text(stack)]


def kind(objects, name):
    return [obj for obj in objects if obj["kind"] == name]


def rayservice_of(objects):
    return kind(objects, "RayService")[0]


def groups(rayservice):
    cluster = rayservice["spec"]["rayClusterConfig"]
    return [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]


def serve_deployment(rayservice):
    return yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"][0]["deployments"][0]


def kuberay_cluster_hash_input(rayservice):
    """What KubeRay 1.4.2 hashes to decide that the cluster changed: rayClusterConfig without the worker
    groups' replicas, minReplicas, maxReplicas and scaleStrategy.workersToDelete
    (rayservice_controller.go:1098-1111, generateHashWithoutReplicasAndWorkersToDelete)."""
    spec = copy.deepcopy(rayservice["spec"]["rayClusterConfig"])
    for group in spec["workerGroupSpecs"]:
        for muted in ("replicas", "minReplicas", "maxReplicas"):
            group.pop(muted, None)
        group.get("scaleStrategy", {}).pop("workersToDelete", None)
    return json.dumps(spec, sort_keys=True)


# --- deprecated fields (#7) -------------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_no_deprecated_threshold_fields(stack):
    """KubeRay 1.4.2 reads neither field ("Deprecated: This field is not used anymore",
    apis/ray/v1/rayservice_types.go:68-73); nothing restarts a cluster for an unhealthy app."""
    rayservice = rayservice_of(rendered(stack))
    assert not set(DEPRECATED) & set(rayservice["spec"])
    # The CRD still accepts them, so only this test notices them coming back.
    stale = copy.deepcopy(rayservice)
    stale["spec"].update({field: 3600 for field in DEPRECATED})
    jsonschema.validate(stale, rayservice_schema())


# --- the endpoint follows the active cluster (#6, #16) ------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_endpoint_is_kuberays_serve_service_of_the_active_cluster(stack):
    objects = rendered(stack)
    rayservice = rayservice_of(objects)
    serve_service = rayservice["spec"]["serveService"]
    name = serve_service["metadata"]["name"]
    # No Service of ours selects Serve pods: one without ray.io/cluster reached every cluster's pods.
    assert kind(objects, "Service") == []
    # KubeRay replaces any selector with ray.io/cluster=<active> (common/service.go:233); none is given.
    assert "selector" not in serve_service["spec"]
    # The serve Service gets its port from the head's container port named "serve" (service.go:213-219).
    head = rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "serve" in {port["name"] for port in head["ports"]}
    # Everything that calls the endpoint calls that Service.
    job = kind(objects, "Job")[0]["spec"]["template"]["spec"]
    smoke = job["containers"][0]["command"]
    assert smoke[smoke.index("--base-url") + 1].startswith(f"http://{name}.{rayservice['metadata']['namespace']}.svc")
    check = job["initContainers"][0]["command"]
    assert check[check.index("--service") + 1] == name
    assert check[check.index("--rayservice") + 1] == f"{rayservice['metadata']['namespace']}/{rayservice['metadata']['name']}"
    for ingress in kind(objects, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            assert {p["backend"]["service"]["name"] for p in rule["http"]["paths"]} == {name}


def test_the_ingress_reaches_the_serve_service():
    objects = workload_objects(workload_spec(make_config(ingressHost="llm.example.com", ingressClass="gce")))
    name = rayservice_of(objects)["spec"]["serveService"]["metadata"]["name"]
    backend = kind(objects, "Ingress")[0]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == name


@pytest.mark.parametrize("stack", STACKS)
def test_kuberay_injects_its_probes(stack):
    """Unset probes let KubeRay add its own: head raylet + GCS, worker raylet + the Serve proxy's
    /-/healthz for readiness (common/pod.go:337-404); ours dropped the proxy and the GCS checks."""
    for group in groups(rayservice_of(rendered(stack))):
        ray_container = group["template"]["spec"]["containers"][0]
        assert "readinessProbe" not in ray_container and "livenessProbe" not in ray_container


# --- upgrade strategy from capacity (#5) ----------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_upgrade_strategy_is_explicit_and_follows_capacity(stack):
    cfg = read_stack_config(stack)
    rayservice = rayservice_of(rendered(stack))
    strategy = rayservice["spec"]["upgradeStrategy"]["type"]
    assert strategy == EXPECTED_STRATEGY[stack]
    pool = gpu_pool_spec(cfg)
    worker = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    floor = max(1, worker["minReplicas"])
    # NewCluster only where the pool holds the active cluster at its floor and a second one beside it.
    assert (strategy == NEW_CLUSTER) == (pool.max_nodes >= 2 * floor)


@pytest.mark.parametrize("low, high, strategy", [(0, 1, RECREATE), (1, 1, RECREATE), (0, 2, NEW_CLUSTER),
                                                 (1, 2, NEW_CLUSTER), (2, 3, RECREATE), (2, 4, NEW_CLUSTER)])
def test_upgrade_strategy_of_pool_sizes(low, high, strategy):
    rayservice = rayservice_of(workload_objects(workload_spec(make_config(gpuNodesMin=low, gpuNodesMax=high))))
    assert rayservice["spec"]["upgradeStrategy"]["type"] == strategy
    jsonschema.validate(rayservice, rayservice_schema())


def test_the_plan_states_what_an_image_change_costs():
    prod, eval_ = upgrade_plan(read_stack_config("prod")), upgrade_plan(read_stack_config("eval"))
    assert prod.zero_downtime and prod.extra_gpus == prod.serving_nodes * 4 and prod.minutes > 0
    assert "zero-downtime" in prod.statement() and f"{prod.extra_gpus} more GPUs" in prod.statement()
    assert not eval_.zero_downtime and eval_.extra_gpus == 0
    assert f"downtime of about {eval_.minutes} minutes" in eval_.statement()
    # NewCluster needs a new node; recreating reuses the node the old worker leaves.
    assert prod.minutes > upgrade_plan(read_stack_config("staging")).minutes


def test_prod_serves_two_replicas_at_rest_and_the_plan_prices_it():
    """A node event on a one-replica prod is an outage of a cold start; two at rest keep serving. The
    plan says what that costs, and the upgrade headroom still holds at Serve's maximum."""
    cfg = read_stack_config("prod")
    scaling = serve_deployment(rayservice_of(rendered("prod")))["autoscaling_config"]
    assert scaling["min_replicas"] >= 2 and scaling["initial_replicas"] >= 2
    plan = upgrade_plan(cfg)
    assert plan.zero_downtime and plan.serve_max // replicas_per_node(cfg) + plan.serving_nodes <= plan.pool_max_nodes
    price = plan.node_usd_per_hour
    assert f"${plan.rest_nodes * price:.2f}/h, ${(plan.rest_nodes - 1) * price:.2f}/h of it for surviving " \
           "a node event" in plan.statement()


def test_serving_pods_run_at_their_own_priority_class():
    """Above pods without a class, below the system-critical classes, never preempting others."""
    from infra.workload.priority import SERVING_PRIORITY

    objects = rendered("prod")
    (priority_class,) = kind(objects, "PriorityClass")
    kubernetes_validate.validate(priority_class, f"{read_stack_config('prod').kubernetes_version}.0", strict=True)
    assert priority_class["value"] == SERVING_PRIORITY and 0 < SERVING_PRIORITY <= 1_000_000_000
    assert priority_class["preemptionPolicy"] == "Never" and priority_class["globalDefault"] is False
    for group in groups(rayservice_of(objects)):
        assert group["template"]["spec"]["priorityClassName"] == priority_class["metadata"]["name"]
    jsonschema.validate(rayservice_of(objects), rayservice_schema())


def test_recreate_stacks_replace_the_rayservice_deleting_it_first():
    for stack in STACKS:
        options = rayservice_options(rayservice_of(rendered(stack)))
        if EXPECTED_STRATEGY[stack] == RECREATE:
            assert options.replace_on_changes == [CLUSTER_CONFIG_PATH] and options.delete_before_replace
        else:
            assert not options.replace_on_changes and not options.delete_before_replace
    # The path names the field that KubeRay hashes, so an image change is inside it.
    rayservice = rayservice_of(rendered("eval"))
    head, path = rayservice, CLUSTER_CONFIG_PATH.split(".")
    for part in path:
        head = head[part]
    assert head["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]


def test_node_bounds_change_is_a_cluster_change_for_kuberay():
    """KubeRay 1.4.2 never updates a cluster whose hash is unchanged and leaves min/max out of the hash,
    so new bounds alone would never reach the running cluster's autoscaler."""
    one = rayservice_of(workload_objects(workload_spec(make_config(gpuNodesMin=1, gpuNodesMax=2))))
    two = rayservice_of(workload_objects(workload_spec(make_config(gpuNodesMin=1, gpuNodesMax=3))))
    assert kuberay_cluster_hash_input(one) != kuberay_cluster_hash_input(two)
    worker = two["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert worker["template"]["metadata"]["annotations"][NODE_BOUNDS_ANNOTATION] == "1-3"


def test_an_image_change_is_a_cluster_change_for_kuberay():
    spec = workload_spec(make_config())
    before = rayservice_of(workload_objects(spec))
    after = rayservice_of(workload_objects(type(spec)(spec.cfg, "registry.example.com/other:2", spec.placement,
                                                      spec.operator_namespace)))
    assert kuberay_cluster_hash_input(before) != kuberay_cluster_hash_input(after)


# --- one model copy per worker (#5) --------------------------------------------------------------------


@pytest.mark.parametrize("storage", ["ephemeral", "readWriteMany", "image"])
@pytest.mark.parametrize("stack", STACKS)
def test_no_read_write_once_volume_is_shared(stack, storage):
    cfg = read_stack_config(stack)
    raw = {"modelStorage": storage, "gpuNodesMin": cfg.gpu_nodes_min, "gpuNodesMax": cfg.gpu_nodes_max}
    if storage == "readWriteMany":
        raw["storageClass"] = "standard-rwx"
    objects = workload_objects(workload_spec(make_config(**raw)))
    claims = {c["metadata"]["name"]: c["spec"]["accessModes"] for c in kind(objects, "PersistentVolumeClaim")}
    for group in groups(rayservice_of(objects)):
        for volume in group["template"]["spec"].get("volumes", []):
            claim = volume.get("persistentVolumeClaim")
            # Every pod of a group, and the next cluster's pods, mount the same claim.
            if claim:
                assert claims[claim["claimName"]] == ["ReadWriteMany"], (storage, volume)
    worker = rayservice_of(objects)["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]
    model = next(v for v in worker["volumes"] if v["name"] == "model-cache")
    expected = {"ephemeral": "ephemeral", "readWriteMany": "persistentVolumeClaim", "image": "emptyDir"}[storage]
    assert expected in model
    for claim in kind(objects, "PersistentVolumeClaim"):
        kubernetes_validate.validate(claim, f"{cfg.kubernetes_version}.0", strict=True)
    # The pod template, ephemeral volume included, against the pinned CRD's embedded Pod schema.
    jsonschema.validate(rayservice_of(objects), rayservice_schema())


@pytest.mark.parametrize("cloud", ["aws", "gcp"])
def test_read_write_many_is_refused_where_the_stack_creates_the_cluster(cloud):
    """Neither cloud's cluster, as this stack creates it, has a ReadWriteMany driver: the claim would stay
    Pending, and the class the old message suggested (standard-rwx) does not exist there."""
    cloud_keys = {"aws": {"cloud": "aws", "region": "us-east-1"},
                  "gcp": {"cloud": "gcp", "region": "us-central1", "gcpProject": "my-gpu-project"}}[cloud]
    with pytest.raises(ConfigError, match=f"modelStorage = 'readWriteMany'.*{cloud} cluster.*no ReadWriteMany"):
        make_config(**cloud_keys, modelStorage="readWriteMany", storageClass="standard-rwx")


def test_read_write_many_without_a_class_is_refused_before_anything_is_built():
    with pytest.raises(ConfigError, match="qwen2vl:modelStorage = 'readWriteMany'.*storageClass.*ReadWriteMany"):
        make_config(modelStorage="readWriteMany")
    with pytest.raises(ConfigError, match="qwen2vl:modelStorage.*one of ephemeral, readWriteMany, image"):
        make_config(modelStorage="rwo")


# --- autoscaling (#12) ------------------------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_autoscaling_bounds_equal_the_node_bounds(stack):
    cfg = read_stack_config(stack)
    rayservice = rayservice_of(rendered(stack))
    cluster = rayservice["spec"]["rayClusterConfig"]
    worker = cluster["workerGroupSpecs"][0]
    deployment = serve_deployment(rayservice)
    scaling = deployment["autoscaling_config"]
    pool, per_node = gpu_pool_spec(cfg), replicas_per_node(cfg)
    assert (scaling["min_replicas"], scaling["max_replicas"]) == (pool.min_nodes * per_node, serve_max_replicas(cfg))
    assert (worker["minReplicas"], worker["maxReplicas"]) == (pool.min_nodes * per_node, pool.max_nodes * per_node)
    # Under NewCluster an upgrade's second cluster (at its floor) fits beside the active one at Serve's maximum.
    if rayservice["spec"]["upgradeStrategy"]["type"] == NEW_CLUSTER:
        assert -(-scaling["max_replicas"] // per_node) + max(1, pool.min_nodes) <= pool.max_nodes
    else:
        assert scaling["max_replicas"] == pool.max_nodes * per_node
    # Ray refuses a fixed num_replicas next to autoscaling_config (ray/serve/schema.py:398-417).
    assert "num_replicas" not in deployment
    assert scaling["target_ongoing_requests"] == cfg.max_num_seqs <= deployment["max_ongoing_requests"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["autoscalerOptions"]["idleTimeoutSeconds"] > 0


@pytest.mark.parametrize("stack", ["eval", "staging"])
def test_scale_to_zero_stacks_can_reach_zero_gpu_nodes(stack):
    objects = rendered(stack)
    rayservice = rayservice_of(objects)
    worker = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert worker["minReplicas"] == 0 and serve_deployment(rayservice)["autoscaling_config"]["min_replicas"] == 0
    assert gpu_pool_spec(read_stack_config(stack)).min_nodes == 0
    # Nothing may pin a GPU node: no disruption budget and no claim outliving the pod on it.
    assert kind(objects, "PodDisruptionBudget") == [] and kind(objects, "PersistentVolumeClaim") == []


def test_only_the_autoscaler_sidecar_gets_an_api_token():
    rayservice = rayservice_of(rendered("staging"))
    cluster = rayservice["spec"]["rayClusterConfig"]
    head = cluster["headGroupSpec"]["template"]["spec"]
    assert head["automountServiceAccountToken"] is False
    mounts = cluster["autoscalerOptions"]["volumeMounts"]
    assert [m["mountPath"] for m in mounts] == [SERVICE_ACCOUNT_DIR]
    volume = next(v for v in head["volumes"] if v["name"] == mounts[0]["name"])
    paths = {item.get("path") or item.get("serviceAccountToken", {}).get("path")
             for source in volume["projected"]["sources"] for item in
             (source.get("configMap", {}).get("items") or source.get("downwardAPI", {}).get("items")
              or [source.get("serviceAccountToken", {})])}
    assert paths == {"token", "ca.crt", "namespace"}
    assert all(SERVICE_ACCOUNT_DIR not in m["mountPath"] for m in head["containers"][0]["volumeMounts"])


def test_serve_config_is_accepted_by_ray_serve():
    """The image's own Ray Serve schema (the image environment's) parses every stack's serveConfigV2."""
    import subprocess

    from tests.test_serve_app import IMAGE_PYTHON, image_env

    configs = [rayservice_of(rendered(stack))["spec"]["serveConfigV2"] for stack in STACKS]
    code = ("import sys, json, yaml; from ray.serve.schema import ServeDeploySchema;"
            "[ServeDeploySchema.parse_obj(yaml.safe_load(c)) for c in json.loads(sys.stdin.read())]; print('ok')")
    proc = subprocess.run([str(IMAGE_PYTHON), "-c", code], input=json.dumps(configs), env=image_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
    broken = yaml.safe_load(configs[0])
    broken["applications"][0]["deployments"][0]["num_replicas"] = 1
    proc = subprocess.run([str(IMAGE_PYTHON), "-c", code], input=json.dumps([yaml.safe_dump(broken)]),
                          env=image_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "num_replicas" in proc.stderr


# --- head restarts (#11) ----------------------------------------------------------------------------------


def test_gcs_fault_tolerance_with_an_external_redis():
    objects = workload_objects(workload_spec(make_config(gcsRedisAddress="redis.qwen2vl.svc:6379",
                                                         gcsRedisPodLabels='{"app.kubernetes.io/name": "redis"}',
                                                         gcsRedisPasswordSecret="qwen2vl-redis")))
    rayservice = rayservice_of(objects)
    options = rayservice["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
    assert options == {"redisAddress": "redis.qwen2vl.svc:6379", "redisPassword": {
        "valueFrom": {"secretKeyRef": {"name": "qwen2vl-redis", "key": "password"}}}}
    jsonschema.validate(rayservice, rayservice_schema())
    # KubeRay refuses redis-password in rayStartParams next to the options (utils/validation.go:61-65).
    head = rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]
    assert "redis-password" not in head["rayStartParams"]
    assert "gcsFaultToleranceOptions" not in rayservice_of(rendered("prod"))["spec"]["rayClusterConfig"]
    with pytest.raises(ConfigError, match="qwen2vl:gcsRedisPasswordSecret.*config set qwen2vl:gcsRedisAddress"):
        make_config(gcsRedisPasswordSecret="qwen2vl-redis")


@pytest.mark.parametrize("low, budget", [(0, False), (1, False), (2, True)])
def test_a_disruption_budget_only_where_it_cannot_block_a_drain(low, budget):
    cfg = make_config(gpuNodesMin=low, gpuNodesMax=max(low, 1) * 2)
    objects = workload_objects(workload_spec(cfg))
    budgets = kind(objects, "PodDisruptionBudget")
    assert bool(budgets) == budget
    for pdb in budgets:
        kubernetes_validate.validate(pdb, f"{cfg.kubernetes_version}.0", strict=True)
        worker = rayservice_of(objects)["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= worker["template"]["metadata"]["labels"].items()
        # With the floor of workers up, one may always go: a drain never waits on it.
        assert pdb["spec"]["maxUnavailable"] == 1 < worker["minReplicas"]


# --- the smoke Job proves the new cluster serves (#5, #6) -----------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_smoke_job_waits_long_enough_for_a_new_cluster(stack):
    """The gate's budget is the one cold-start estimate (a new node, image, model, load) with a margin: a
    new cluster and a Serve config change on a stack at zero replicas both cost that."""
    cfg = read_stack_config(stack)
    spec = workload_spec(cfg)
    cold_start_s = upgrade.ready_seconds(cfg, upgrade.model_bytes(cfg), new_node=True)
    assert wait_for_active_seconds(spec) >= 2 * cold_start_s
    assert active_deadline_seconds(spec) > wait_for_active_seconds(spec) + WAIT_FOR_READY_SECONDS
    job = kind(rendered(stack), "Job")[0]
    assert job["spec"]["activeDeadlineSeconds"] == active_deadline_seconds(spec)
    check = job["spec"]["template"]["spec"]["initContainers"][0]["command"]
    assert check[check.index("--wait") + 1] == str(wait_for_active_seconds(spec))
    # The expected image is the Job's own, which Pulumi replaces by the pushed digest like the cluster's
    # (and kustomize through its replacement, tests/test_kubectl_path.py).
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["initContainers"][0]["env"]}
    assert env[check[check.index("--image-env") + 1]] == job["spec"]["template"]["spec"]["containers"][0]["image"]


class FakeKubeApi:
    """Just enough of the Kubernetes API for the active-cluster check: GETs of a RayService, RayClusters
    and a Service, from a state the test sets; every path asked for is recorded."""

    def __init__(self):
        self.state, self.paths = {}, []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                api.paths.append(self.path)
                if self.headers.get("Authorization") != "Bearer t0ken":
                    self.send_response(401)
                    self.end_headers()
                    return
                body = api.state.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(json.dumps(body if body is not None else {"kind": "Status"}).encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def serve(self, active, pending, images, selected, observed=2, app="RUNNING", deployment="HEALTHY"):
        """KubeRay's view: the clusters, the Service's selector, and the active cluster's Serve app status
        as KubeRay 1.4.2 copies it (apis/ray/v1/rayservice_types.go AppStatus)."""
        ns = "/apis/ray.io/v1/namespaces/qwen2vl"
        apps = {"qwen2vl": {"status": app, "serveDeploymentStatuses": {"VLLMServer": {"status": deployment}}}}
        self.state = {
            f"{ns}/rayservices/qwen2vl": {"metadata": {"generation": 2}, "status": {
                "observedGeneration": observed,
                "activeServiceStatus": {"rayClusterName": active, "applicationStatuses": apps if active else {}},
                "pendingServiceStatus": {"rayClusterName": pending}}},
            "/api/v1/namespaces/qwen2vl/services/qwen2vl-openai": {"spec": {"selector": {
                "ray.io/cluster": selected, "ray.io/serve": "true"}}},
        }
        for name, image in images.items():
            template = {"spec": {"containers": [{"name": "ray", "image": image}]}}
            self.state[f"{ns}/rayclusters/{name}"] = {"spec": {"headGroupSpec": {"template": template},
                                                               "workerGroupSpecs": [{"template": template}]}}


def check(api, wait=0.0, clock=None):
    kube = active_cluster.KubeApi(api.url, "t0ken", None, timeout_s=5)
    lines = []
    kwargs = {"clock": clock, "pause": lambda _: None} if clock else {}
    if kwargs:
        seen = active_cluster.wait_active(kube, "qwen2vl", "qwen2vl", "qwen2vl-openai", "img@new", wait, 0, **kwargs)
        return (0 if seen.ok else 1), seen.reason
    code = active_cluster.main(["--rayservice", "qwen2vl/qwen2vl", "--service", "qwen2vl-openai", "--image",
                                "img@new", "--wait", str(wait)], api=kube, printer=lines.append)
    return code, "\n".join(lines)


@pytest.mark.parametrize("state, words", [
    (dict(active="c-old", pending="c-new", images={"c-old": "img@old", "c-new": "img@new"}, selected="c-old"),
     "c-new is still pending"),
    (dict(active="c-old", pending="", images={"c-old": "img@old"}, selected="c-old"), "runs img@old, not img@new"),
    (dict(active="c-new", pending="", images={"c-new": "img@new"}, selected="c-old"), "selects cluster c-old"),
    (dict(active="", pending="c-new", images={}, selected=None), "no active cluster yet"),
    (dict(active="c-new", pending="", images={"c-new": "img@new"}, selected="c-new", observed=1),
     "not yet observed generation 2"),
    # A serveConfigV2 change: same image and cluster, the new config still rolling out (from zero: a cold start).
    (dict(active="c-new", pending="", images={"c-new": "img@new"}, selected="c-new", app="DEPLOYING"),
     "Serve application qwen2vl is DEPLOYING"),
    (dict(active="c-new", pending="", images={"c-new": "img@new"}, selected="c-new", deployment="UPSCALING"),
     "not at its target replicas yet: VLLMServer UPSCALING"),
])
def test_active_cluster_check_fails_naming_what_it_saw(state, words):
    with FakeKubeApi() as api:
        api.serve(**state)
        code, out = check(api)
    assert code == 1 and words in out, out


def test_active_cluster_check_passes_once_the_new_cluster_serves_and_the_role_allows_its_reads():
    with FakeKubeApi() as api:
        api.serve(active="c-old", pending="c-new", images={"c-old": "img@old", "c-new": "img@new"}, selected="c-old")
        ticks = iter(range(100))

        def clock():
            # The operator switches traffic after the third look (KubeRay promotes pending to active).
            tick = next(ticks)
            if tick == 3:
                api.serve(active="c-new", pending="", images={"c-new": "img@new"}, selected="c-new")
            return float(tick)

        code, reason = check(api, wait=100, clock=clock)
        paths = list(api.paths)
    assert code == 0 and "selects the active cluster c-new, which runs img@new" in reason
    role = kind(rendered("eval"), "Role")[0]
    for path in set(paths):
        parts = path.strip("/").split("/")
        group = "" if parts[0] == "api" else parts[1]
        resource, name = parts[-2], parts[-1]
        assert any(group in rule["apiGroups"] and resource in rule["resources"] and "get" in rule["verbs"]
                   and name in rule.get("resourceNames", [name]) for rule in role["rules"]), path


def test_a_cluster_level_change_without_new_server_args_is_smoke_tested():
    """A change KubeRay rolls out (here the model volume's class, in the worker template) renames the
    smoke Job, so `pulumi up` waits for it and proves the result; the old name covered only the image and
    the vLLM args."""
    from infra.workload.smoke_job import smoke_job_name

    before, after = workload_spec(make_config()), workload_spec(make_config(storageClass="gp3"))
    assert before.image == after.image
    assert smoke_job_name(before) != smoke_job_name(after)
    assert smoke_job_name(before) == smoke_job_name(workload_spec(make_config()))


def test_a_serve_config_change_passes_only_once_the_new_config_serves():
    """A serveConfigV2-only change on a stack at zero replicas: same image, same cluster. KubeRay's first
    status for the new generation is read before it submits the config (still RUNNING, the old config),
    then the app deploys through a cold start; the gate passes only after that."""
    with FakeKubeApi() as api:
        same = dict(active="c-1", pending="", images={"c-1": "img@new"}, selected="c-1")
        api.serve(**same)  # observed generation 2, old config still RUNNING
        ticks, passed_at = iter(range(10_000)), []

        def clock():
            tick = next(ticks)
            if tick == 5:
                api.serve(**same, app="DEPLOYING", deployment="UPDATING")  # KubeRay's next read
            if tick == 1200:
                api.serve(**same)  # the new replica serves, about 20 minutes later
            passed_at.append(tick)
            return float(tick)

        code, reason = check(api, wait=4800, clock=clock)
    assert code == 0 and "serves the current config" in reason
    assert passed_at[-1] >= 1200


@pytest.mark.parametrize("stack", ["eval", "prod"])
def test_the_plan_summary_says_what_an_image_change_costs(plan_of, stack):
    from infra.offline.report import summary
    from infra.workload.upgrade import image_change_cost

    lines = [v.message for v in summary(plan_of(stack)) if v.name == "upgrade"]
    assert lines == [image_change_cost(read_stack_config(stack))]


@pytest.mark.parametrize("stack", ["eval", "prod"])
def test_the_program_registers_the_replacement_options(plan_of, stack):
    """As the Pulumi SDK sends them to the engine (RegisterResourceRequest), not only as our function returns them."""
    rayservice = next(r for r in plan_of(stack).resources if r.type == "kubernetes:ray.io/v1:RayService")
    if EXPECTED_STRATEGY[stack] == RECREATE:
        assert rayservice.replace_on_changes == [CLUSTER_CONFIG_PATH] and rayservice.delete_before_replace
    else:
        assert rayservice.replace_on_changes == [] and not rayservice.delete_before_replace
