"""The pods hold up on real nodes: the head fits the system pool, every library's default write lands on
a writable mount under a read-only root, the network policies admit and allow exactly what docs/pod.md
says, vLLM's metrics have their own port, and the manifests can be pointed at a pullable image."""

import contextlib
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infra import pins
from infra.config import ConfigError
from infra.nodepool import SYSTEM_INSTANCE_DEFAULTS
from infra.offline.engine import read_stack_config
from infra.placement.check import placement_report
from infra.placement.clouds import allocatable, machine
from infra.placement.quantity import CPU, MEMORY, amount as parse_quantity
from infra.rehearsal import write_paths
from infra.rehearsal.manifests import Container, Mount, Volume
from infra.workload.manifests import render_manifests, workload_spec
from infra.workload.objects import workload_objects
from infra.workload.spec import VLLM_METRICS_PORT
from tests.conftest import REPO_ROOT, make_config
from tests.vllm_release import pinned_vllm_source

sys.path.insert(0, str(REPO_ROOT / "images" / "vllm"))
from qwen2vl_serve import drain  # noqa: E402
from qwen2vl_serve.server import ServerArgs, command  # noqa: E402

CLOUD_STACKS = ("eval", "staging", "prod")
# The image's user and its home (images/vllm/Dockerfile: useradd --create-home serve): what HOME is in a
# container whose manifest does not set it.
IMAGE_HOME = "/home/serve"


@contextlib.contextmanager
def socket_closed_port():
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield port


def objects_of(cfg):
    return workload_objects(workload_spec(cfg))


def by_kind(objects):
    found = {}
    for obj in objects:
        found.setdefault(obj["kind"], []).append(obj)
    return found


def cluster_of(objects):
    return by_kind(objects)["RayService"][0]["spec"]["rayClusterConfig"]


def head_pod(objects):
    return cluster_of(objects)["headGroupSpec"]["template"]["spec"]


def worker_pod(objects):
    return cluster_of(objects)["workerGroupSpecs"][0]["template"]["spec"]


def serve_args(objects):
    serve = yaml.safe_load(by_kind(objects)["RayService"][0]["spec"]["serveConfigV2"])
    return serve["applications"][0]


# 1. The Ray head fits its node.

@pytest.mark.parametrize("cloud", sorted(SYSTEM_INSTANCE_DEFAULTS))
def test_head_fits_a_default_system_node(cloud):
    """Against the node's allocatable by the cloud's own reservation formula (infra/placement/clouds.py),
    leaving room for the KubeRay operator and the cloud's DaemonSets."""
    container = head_pod(objects_of(make_config()))["containers"][0]
    resources = container["resources"]
    node = allocatable(machine(cloud, SYSTEM_INSTANCE_DEFAULTS[cloud]), gpu_advertised=False)
    assert parse_quantity(CPU, resources["requests"]["cpu"]) <= node[CPU]
    assert parse_quantity(MEMORY, resources["requests"]["memory"]) <= node[MEMORY]
    assert resources["limits"]["memory"] == resources["requests"]["memory"]
    assert "cpu" not in resources["limits"]


@pytest.mark.parametrize("stack", CLOUD_STACKS)
def test_the_scheduler_twin_places_the_head_on_the_system_pool(stack):
    cfg = read_stack_config(stack)
    report = placement_report(cfg, objects_of(cfg))
    heads = [pod for pod in report.pods if pod.pod.endswith("/head")]
    assert heads, [pod.pod for pod in report.pods]
    for head in heads:
        assert (head.pool, head.reasons) == ("system", []), head.as_dict()


# 2. Writable state under a read-only root filesystem.

def _volume(spec):
    if "emptyDir" in spec:
        size = spec["emptyDir"].get("sizeLimit")
        return Volume(spec["name"], "emptyDir", medium=spec["emptyDir"].get("medium", ""),
                      size_limit=None if size is None else parse_quantity(MEMORY, size))
    if "persistentVolumeClaim" in spec or "ephemeral" in spec:
        return Volume(spec["name"], "claim")
    return Volume(spec["name"], "files")


def _container(pod_spec, container):
    volumes = {v["name"]: _volume(v) for v in pod_spec["volumes"]}
    security = {**pod_spec.get("securityContext", {}), **container.get("securityContext", {})}
    return Container(
        pod="", name=container["name"], command=(), args=(),
        env=tuple((e["name"], e.get("value", e.get("valueFrom"))) for e in container.get("env", [])),
        mounts=tuple(Mount(m["mountPath"], volumes[m["name"]], bool(m.get("readOnly")))
                     for m in container.get("volumeMounts", [])),
        uid=security.get("runAsUser"), gid=security.get("runAsGroup"),
        read_only_root=bool(security.get("readOnlyRootFilesystem")), probes={}, labels={}, resources={}, ports={})


def ray_containers(stack):
    """The head's and the worker's Ray containers and init containers, as the rendered manifests give them."""
    objects = [yaml.safe_load(text) for name, text in render_manifests(read_stack_config(stack)).items()
               if not name.endswith("kustomization.yaml")]
    containers = []
    for pod_spec in (head_pod(objects), worker_pod(objects)):
        for container in (*pod_spec["containers"][:1], *pod_spec.get("initContainers", [])):
            containers.append(_container(pod_spec, container))
    return containers


def container_env(container):
    return {"HOME": IMAGE_HOME, **{name: value for name, value in container.env if isinstance(value, str)}}


@pytest.mark.parametrize("stack", CLOUD_STACKS)
def test_vllm_and_its_libraries_write_only_to_writable_mounts(stack):
    """The rehearsal's static resolver of vLLM 0.6.3.post1's write paths (P2P cache, usage stats,
    Triton, outlines, the hub cache, RPC sockets), on the rendered head and worker."""
    for container in ray_containers(stack):
        assert container.read_only_root
        for check in write_paths.check(container, container_env(container)):
            assert check.writable, check.message


TORCH_AND_CUDA = ("TORCHINDUCTOR_CACHE_DIR", "TORCH_EXTENSIONS_DIR", "CUDA_CACHE_PATH", "HOME", "XDG_CACHE_HOME",
                  "XDG_CONFIG_HOME", "VLLM_CACHE_ROOT", "VLLM_CONFIG_ROOT", "TRITON_CACHE_DIR", "OUTLINES_CACHE_DIR")


@pytest.mark.parametrize("stack", CLOUD_STACKS)
def test_every_cache_root_is_on_a_sized_writable_mount(stack):
    for container in ray_containers(stack):
        env = container_env(container)
        for name in TORCH_AND_CUDA:
            mount = container.mount_at(env[name])
            assert mount is not None and mount.writable, (container.name, name, env[name])
            assert mount.volume.size_limit, (container.name, name, "an emptyDir without sizeLimit can fill the node")
        assert env["VLLM_NO_USAGE_STATS"] == "1" and env["DO_NOT_TRACK"] == "1"
        assert env["RAY_USAGE_STATS_ENABLED"] == "0"


def test_pinned_vllm_resolves_its_cache_and_config_roots_into_the_home_volume(tmp_path):
    """vLLM 0.6.3.post1's own envs.py (from its wheel), run under exactly the worker's environment."""
    (tmp_path / "envs.py").write_text(pinned_vllm_source("vllm/envs.py"))
    worker = ray_containers("prod")[1]
    env = {**container_env(worker), "PATH": os.environ["PATH"]}
    probe = ("import json, envs; print(json.dumps({k: getattr(envs, k) for k in "
             "('VLLM_CACHE_ROOT', 'VLLM_CONFIG_ROOT', 'VLLM_ASSETS_CACHE', 'VLLM_RPC_BASE_PATH', "
             "'VLLM_NO_USAGE_STATS', 'VLLM_DO_NOT_TRACK')}))")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    resolved = json.loads(proc.stdout)
    assert resolved["VLLM_NO_USAGE_STATS"] and resolved["VLLM_DO_NOT_TRACK"]
    for key in ("VLLM_CACHE_ROOT", "VLLM_CONFIG_ROOT", "VLLM_ASSETS_CACHE", "VLLM_RPC_BASE_PATH"):
        mount = worker.mount_at(resolved[key])
        assert mount is not None and mount.writable, (key, resolved[key])


def test_init_containers_share_the_environment_and_the_home_volume():
    lock = {"repo": pins.MODEL_REPO, "revision": read_stack_config("prod").model_revision,
            "resolved": True, "commit": "0" * 40, "files": [{"path": "config.json", "size": 1, "sha256": "0" * 64}]}
    cfg = read_stack_config("prod")
    pod = worker_pod(workload_objects(workload_spec(cfg, lock)))
    main = pod["containers"][0]
    main_env = {e["name"]: e.get("value") for e in main["env"]}
    assert pod.get("initContainers"), "a resolved lock fetches the model in an init container"
    for init in pod["initContainers"]:
        env = {e["name"]: e.get("value") for e in init["env"]}
        for name in TORCH_AND_CUDA:
            assert env[name] == main_env[name], (init["name"], name)
        home_mounts = [m for m in init["volumeMounts"] if m["mountPath"] == env["HOME"]]
        assert home_mounts and not home_mounts[0].get("readOnly"), init["name"]


def test_object_store_stays_in_shm_and_leaves_room_for_nccl():
    """Ray puts plasma in /dev/shm only when it holds the whole object store (ray/_private/services.py:
    2001-2005); on the worker the rest of /dev/shm is for NCCL and vLLM's shared-memory broadcast."""
    objects = objects_of(make_config())
    cluster = cluster_of(objects)
    for group, pod in ((cluster["headGroupSpec"], head_pod(objects)), (cluster["workerGroupSpecs"][0], worker_pod(objects))):
        store = int(group["rayStartParams"]["object-store-memory"])
        shm_mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == "/dev/shm")
        shm = next(v for v in pod["volumes"] if v["name"] == shm_mount["name"])
        size = parse_quantity(MEMORY, shm["emptyDir"]["sizeLimit"])
        assert shm["emptyDir"]["medium"] == "Memory"
        assert store < size
    worker_shm = next(v for v in worker_pod(objects)["volumes"] if v["name"] == "dshm")
    assert parse_quantity(MEMORY, worker_shm["emptyDir"]["sizeLimit"]) - store >= 8 * 2**30


def test_volume_ownership_and_grace_periods():
    objects = objects_of(make_config())
    shutdown = serve_args(objects)["deployments"][0]["graceful_shutdown_timeout_s"]
    for pod in (head_pod(objects), worker_pod(objects)):
        assert pod["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
        assert pod["terminationGracePeriodSeconds"] > shutdown


def flag(command_line, name):
    return command_line[command_line.index(name) + 1]


def test_pod_deletion_lets_serve_drain_the_replica_inside_the_grace_period():
    """Deleting a pod runs its preStop hook before SIGTERM: the worker's marks the pod draining, so the
    replica fails its health checks and Serve stops it gracefully (requests drain for up to
    graceful_shutdown_timeout_s) while new ones go to other replicas; the head's keeps the controller up
    meanwhile. The hook's deadline covers Serve noticing (3 failed checks, one per health_check_period_s) and
    the drain, and the grace period covers the hook."""
    objects = objects_of(make_config())
    deployment = serve_args(objects)["deployments"][0]
    notice = 3 * deployment["health_check_period_s"]
    for role, pod in (("head", head_pod(objects)), ("worker", worker_pod(objects))):
        container = pod["containers"][0]
        hook = container["lifecycle"]["preStop"]["exec"]["command"]
        assert hook[:4] == ["python", "-m", "qwen2vl_serve.drain", role]
        deadline = float(flag(hook, "--deadline"))
        assert deadline >= notice + deployment["graceful_shutdown_timeout_s"]
        assert pod["terminationGracePeriodSeconds"] > deadline
    worker = worker_pod(objects)["containers"][0]
    marker = next(e["value"] for e in worker["env"] if e["name"] == drain.DRAIN_MARKER_ENV)
    assert any(marker.startswith(m["mountPath"] + "/") for m in worker["volumeMounts"])  # writable, shared
    assert flag(worker["lifecycle"]["preStop"]["exec"]["command"], "--metrics-url") == \
        f"http://127.0.0.1:{VLLM_METRICS_PORT}/metrics"
    head_hook = head_pod(objects)["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert float(flag(head_hook, "--notice")) > notice


def test_the_worker_hook_runs_as_built_and_returns_once_no_replica_answers(tmp_path):
    """The worker's preStop command from the manifest, run here (python = this interpreter), on a pod with no
    replica left: it writes the marker the replica reads and returns at once."""
    worker = worker_pod(objects_of(make_config()))["containers"][0]
    hook = worker["lifecycle"]["preStop"]["exec"]["command"]
    with socket_closed_port() as port:
        hook = [sys.executable, *hook[1:]]
        hook[hook.index("--metrics-url") + 1] = f"http://127.0.0.1:{port}/metrics"
        marker = tmp_path / "pod-deleted"
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO_ROOT / "images" / "vllm"),
               drain.DRAIN_MARKER_ENV: str(marker)}
        done = subprocess.run(hook, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "the replica is gone" in done.stdout, done.stdout + done.stderr
    assert marker.exists()
    os.environ[drain.DRAIN_MARKER_ENV] = str(marker)
    try:
        assert drain.draining()
    finally:
        del os.environ[drain.DRAIN_MARKER_ENV]
    assert not drain.draining()  # a Ray outside such a pod never drains


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_the_worker_hook_waits_while_the_replica_answers_up_to_its_deadline(tmp_path):
    clock = Clock()
    answers = iter([True] * 10 + [False])
    outcome = drain.drain_worker("m", 100, tmp_path / "marker", answers=lambda _: next(answers), clock=clock,
                                 sleep=clock.sleep)
    assert outcome == "the replica is gone" and clock.now == 10 * drain.POLL_S
    clock = Clock()
    outcome = drain.drain_worker("m", 100, tmp_path / "marker", answers=lambda _: True, clock=clock,
                                 sleep=clock.sleep)
    assert "still answered after 100 s" in outcome and 100 <= clock.now < 100 + drain.POLL_S


@pytest.mark.parametrize("timeline, outcome, seconds", [
    # The whole cluster is deleted: the workers' replicas start draining, then go.
    ([["RUNNING", "RUNNING"]] * 10 + [["STOPPING", "RUNNING"]] * 5 + [["STOPPING", "STOPPING"]] * 10
     + [["STARTING"]], "every replica has drained", 25 * drain.POLL_S),
    # Only the head is deleted: no replica drains, so the head does not wait past the notice.
    ([["RUNNING"]] * 100, "only the head is deleted", 46),
    # No Serve (the dashboard is gone): nothing to wait for.
    ([None], "Serve does not answer", 0),
    # Replicas drain past the deadline: the head gives up at its deadline.
    ([["STOPPING"]] * 1000, "replicas still served after 100 s", 100),
])
def test_the_head_hook_waits_only_while_replicas_drain(timeline, outcome, seconds):
    clock = Clock()
    states = iter(timeline)
    assert outcome in drain.drain_head("u", 100, 45, states=lambda _: next(states), clock=clock, sleep=clock.sleep)
    assert seconds <= clock.now < seconds + drain.POLL_S


# 3. The network policies, evaluated as the NetworkPolicy API defines them
# (https://kubernetes.io/docs/concepts/services-networking/network-policies/): a pod selected by a policy
# of a direction is isolated in it; a connection is allowed when a rule of any selecting policy admits it.

NAMESPACE = "qwen2vl"


def pod(namespace, labels, ip="10.8.0.10"):
    return {"namespace": namespace, "labels": labels, "ip": ip}


def ray_pod(component):
    return pod(NAMESPACE, {"app.kubernetes.io/instance": "qwen2vl", "app.kubernetes.io/component": component,
                           "ray.io/is-ray-node": "yes"})


HEAD = ray_pod("ray-head")
WORKER = ray_pod("ray-gpu-worker")
SMOKE = pod(NAMESPACE, {"app.kubernetes.io/instance": "qwen2vl", "app.kubernetes.io/component": "smoke-test"})
STRANGER = pod(NAMESPACE, {"app": "debug"})
OPERATOR = pod("kuberay-system", {"app.kubernetes.io/name": "kuberay-operator"})
CLIENT = pod("apps", {"app": "web"})
PROMETHEUS = pod("monitoring", {"app": "prometheus"})
KUBE_DNS = pod("kube-system", {"k8s-app": "kube-dns"}, ip="10.8.0.2")
HUB = {"ip": "18.239.50.80"}  # a public address (huggingface.co's CDN is one of many)
METADATA = {"ip": "169.254.169.254"}
API_SERVER = {"ip": "10.0.0.1"}
PRIVATE_SERVICE = {"ip": "10.20.30.40"}


def _labels_match(selector, labels):
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        value = labels.get(expression["key"])
        if expression["operator"] == "In" and value not in expression["values"]:
            return False
    return True


def _peer_matches(peer, policy_namespace, endpoint):
    if "ipBlock" in peer:
        address = ipaddress.ip_address(endpoint["ip"])
        block = peer["ipBlock"]
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(e) for e in block.get("except", []))
    if "namespace" not in endpoint:
        return False
    if "namespaceSelector" in peer:
        namespace_ok = _labels_match(peer["namespaceSelector"], {"kubernetes.io/metadata.name": endpoint["namespace"]})
    else:
        namespace_ok = endpoint["namespace"] == policy_namespace
    return namespace_ok and _labels_match(peer.get("podSelector", {}), endpoint["labels"])


def _rule_admits(rule, peers_key, policy_namespace, other, port, protocol):
    peers = rule.get(peers_key)
    if peers is not None and not any(_peer_matches(p, policy_namespace, other) for p in peers):
        return False
    ports = rule.get("ports")
    return ports is None or any(p.get("protocol", "TCP") == protocol and p.get("port") in (None, port) for p in ports)


def allowed(policies, source, destination, port, protocol="TCP"):
    def side(endpoint, direction, rules_key, peers_key, other):
        if "namespace" not in endpoint:  # outside the cluster: no policy applies to it
            return True
        selecting = [p for p in policies if p["metadata"]["namespace"] == endpoint["namespace"]
                     and direction in p["spec"]["policyTypes"] and _labels_match(p["spec"]["podSelector"], endpoint["labels"])]
        return not selecting or any(
            _rule_admits(rule, peers_key, p["metadata"]["namespace"], other, port, protocol)
            for p in selecting for rule in p["spec"].get(rules_key, []))

    return (side(source, "Egress", "egress", "to", destination)
            and side(destination, "Ingress", "ingress", "from", source))


def policies_of(cfg):
    return [obj for obj in objects_of(cfg) if obj["kind"] == "NetworkPolicy"]


CONFIGURED = make_config(allowedNamespaces=["apps"])


@pytest.mark.parametrize("source, destination, port, expected", [
    (CLIENT, HEAD, 8000, True), (CLIENT, WORKER, 8000, True),
    (CLIENT, HEAD, 8265, False), (CLIENT, WORKER, 8080, False), (CLIENT, WORKER, VLLM_METRICS_PORT, False),
    (OPERATOR, HEAD, 8265, True), (OPERATOR, HEAD, 8000, True),
    (OPERATOR, HEAD, 52365, False), (OPERATOR, WORKER, 8080, False),
    (PROMETHEUS, WORKER, 8080, True), (PROMETHEUS, WORKER, VLLM_METRICS_PORT, True), (PROMETHEUS, HEAD, 8000, False),
    (SMOKE, HEAD, 8000, True), (SMOKE, WORKER, 8000, True), (SMOKE, HEAD, 8265, False),
    (STRANGER, HEAD, 8265, False), (STRANGER, HEAD, 6379, False), (STRANGER, WORKER, 8000, False),
    (WORKER, HEAD, 6379, True), (HEAD, WORKER, 10002, True), (WORKER, HEAD, 8265, True),
], ids=lambda v: v if isinstance(v, (int, bool)) else None)
def test_ingress_is_split_by_port(source, destination, port, expected):
    assert allowed(policies_of(CONFIGURED), source, destination, port) is expected


@pytest.mark.parametrize("source, destination, port, protocol, expected", [
    (WORKER, KUBE_DNS, 53, "UDP", True), (SMOKE, KUBE_DNS, 53, "TCP", True), (WORKER, KUBE_DNS, 80, "TCP", False),
    (WORKER, HUB, 443, "TCP", True), (WORKER, HUB, 22, "TCP", False),
    (WORKER, METADATA, 80, "TCP", False), (WORKER, METADATA, 443, "TCP", False),
    (WORKER, PRIVATE_SERVICE, 443, "TCP", False), (WORKER, API_SERVER, 443, "TCP", False),
    (HEAD, API_SERVER, 443, "TCP", True), (SMOKE, API_SERVER, 443, "TCP", True),
    (WORKER, HEAD, 6379, "TCP", True), (SMOKE, HEAD, 8000, "TCP", True),
    (WORKER, CLIENT, 8000, "TCP", False),
], ids=lambda v: v if isinstance(v, (int, bool, str)) else None)
def test_egress_reaches_only_dns_peers_the_hub_and_the_api_server(source, destination, port, protocol, expected):
    assert allowed(policies_of(CONFIGURED), source, destination, port, protocol) is expected


def test_a_hub_mirror_on_its_own_port_is_reachable():
    cfg = make_config(hubEndpoint="http://hf-mirror.example.com:8080")
    assert allowed(policies_of(cfg), WORKER, HUB, 8080)
    assert not allowed(policies_of(cfg), WORKER, HUB, 443)


def test_monitoring_namespace_is_a_config_key():
    cfg = make_config(monitoringNamespace="observability")
    assert allowed(policies_of(cfg), pod("observability", {}), WORKER, 8080)
    assert not allowed(policies_of(cfg), PROMETHEUS, WORKER, 8080)
    with pytest.raises(ConfigError, match="monitoringNamespace.*pulumi config set qwen2vl:monitoringNamespace"):
        make_config(monitoringNamespace="Not_A_Namespace")


def test_the_evaluator_can_deny():
    """A policy-free namespace allows everything; the same connection under the policies does not."""
    assert allowed([], STRANGER, HEAD, 8265)
    assert not allowed(policies_of(CONFIGURED), STRANGER, HEAD, 8265)


# 4. vLLM's metrics port.

def test_vllm_metrics_have_their_own_named_port_that_the_serve_app_accepts():
    objects = objects_of(make_config())
    ports = {p["name"]: p["containerPort"] for p in worker_pod(objects)["containers"][0]["ports"]}
    assert ports["vllm-metrics"] == VLLM_METRICS_PORT
    args = serve_args(objects)["args"]
    assert args["metrics_port"] == VLLM_METRICS_PORT
    ServerArgs.from_mapping(args)  # the Serve app's own parser takes every arg the RayService passes
    for obj in objects:
        annotations = obj.get("metadata", {}).get("annotations", {})
        assert annotations.get("prometheus.io/port") != "8000", obj["metadata"]["name"]


def test_quantization_none_passes_no_flag():
    args = serve_args(objects_of(make_config(quantization="none")))["args"]
    assert "quantization" not in args
    assert "--quantization" not in command(ServerArgs.from_mapping(args), port=8001)
    assert serve_args(objects_of(make_config(quantization="awq")))["args"]["quantization"] == "awq"


# 5. Manifests for kubectl users name a pullable image.

KUBECTL = shutil.which("kubectl") or str(Path(sys.executable).parent / "kubectl")
PUSHED = "123456789012.dkr.ecr.us-east-1.amazonaws.com/qwen2vl-vllm@sha256:" + "ab" * 32


def container_images(docs):
    images = []

    def walk(value):
        if isinstance(value, dict):
            for key in ("containers", "initContainers"):
                images.extend(c["image"] for c in value.get(key, []) if "image" in c)
            for child in value.values():
                walk(child)
        elif isinstance(value, list):
            for child in value:
                walk(child)

    for doc in docs:
        walk(doc)
    return images


@pytest.mark.parametrize("stack", ["staging"])
def test_kubectl_kustomize_runs_the_image_set_by_render(stack, tmp_path, monkeypatch):
    import scripts.render as render

    monkeypatch.setattr(render, "MANIFESTS", tmp_path)
    assert render.main(["--stack", stack, "--image", PUSHED]) == 0
    proc = subprocess.run([KUBECTL, "kustomize", str(tmp_path / stack)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    images = container_images(yaml.safe_load_all(proc.stdout))
    assert len(images) >= 3  # head, worker, smoke Job
    assert set(images) == {PUSHED}


def test_render_refuses_a_malformed_image(capsys):
    import scripts.render as render

    assert render.main(["--stack", "eval", "--image", "Not An Image"]) == 2
    assert "--image" in capsys.readouterr().err
