"""What KubeRay 1.4.2 adds to the RayService's pods before they run, and how it submits serveConfigV2.
Pure. Every rule is read from the operator's source at tag v1.4.2 (ray-operator/controllers/ray/...);
the comments cite file and line.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

from infra import pins
from infra.rehearsal.manifests import Container, Mount, Stack, Volume, quantity

VERSION = f"v{pins.KUBERAY_OPERATOR_CHART_VERSION}"  # utils/constant.go:210
DEFAULT_GCS_PORT = "6379"  # common/pod.go:50-55 GetHeadPort: rayStartParams["port"] or DefaultGcsServerPort
DEFAULT_DASHBOARD_PORT = 8265  # utils/constant.go:68
DEFAULT_METRICS_PORT = "8080"  # utils/constant.go:69
DEFAULT_AGENT_PORT = "52365"  # utils/constant.go:70
DEFAULT_SERVING_PORT = 8000  # utils/constant.go:71
HEAD_GROUP = "headgroup"  # utils/constant.go:204 RayNodeHeadGroupLabelValue
CLUSTER_DOMAIN = "cluster.local"  # utils/util.go:30-31,58-63 (CLUSTER_DOMAIN unset)
# utils/dashboard_httpclient.go:24-25: KubeRay PUTs the whole config to, and reads the status from, this path.
SERVE_APPLICATIONS_PATH = "/api/serve/applications/"
# utils/dashboard_httpclient.go sets only Content-Type on its PUT and GETs (143, 337), so Go's net/http sends
# its default User-Agent (defaultUserAgent in net/http/request.go). Ray 2.38's dashboard needs one on every
# request: its browsers_no_post_put_middleware reads request.headers["User-Agent"]
# (dashboard/http_server_head.py:170), and a request without one gets 500.
DASHBOARD_CLIENT_HEADERS = {"Content-Type": "application/json", "User-Agent": "Go-http-client/1.1"}
# utils/constant.go:195-198: the health paths and the wget command of the probes KubeRay injects.
AGENT_HEALTH_PATH = "api/local_raylet_healthz"
GCS_HEALTH_PATH = "api/gcs_healthz"
PROXY_HEALTH_PATH = "-/healthz"
WGET_HEALTH = "wget --tries 1 -T {timeout} -q -O- http://localhost:{port}/{path} | grep success"


@dataclass(frozen=True)
class Cluster:
    """The RayCluster the RayService creates; its name carries a random suffix on a real cluster
    (utils/util.go:320-322 GenerateRayClusterName), a fixed one here."""
    name: str
    namespace: str
    rayservice: str

    @property
    def head_service(self) -> str:
        # utils/util.go:267-276 (RayClusterCRD) and 283-291 GenerateFQDNServiceName
        return f"{self.name}-head-svc"

    @property
    def head_fqdn(self) -> str:
        return f"{self.head_service}.{self.namespace}.svc.{CLUSTER_DOMAIN}"


def cluster_of(stack: Stack) -> Cluster:
    return Cluster(f"{stack.rayservice}-rehearsal", stack.namespace, stack.rayservice)


def complete_start_params(params: Mapping[str, str], head: bool, head_port: str, head_fqdn: str) -> dict[str, str]:
    """common/pod.go:744-787 setMissingRayStartParams."""
    complete = dict(params)
    if not head:
        complete.setdefault("address", f"{head_fqdn}:{head_port}")
    else:
        complete.setdefault("dashboard-host", "0.0.0.0")
    complete.setdefault("metrics-export-port", DEFAULT_METRICS_PORT)
    complete["block"] = "true"
    complete.setdefault("dashboard-agent-listen-port", DEFAULT_AGENT_PORT)
    return complete


def add_resource_params(params: dict[str, str], resources: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """common/pod.go:789-819 generateRayStartCommand: num-cpus from the CPU limit (else request), memory
    from the memory limit, num-gpus from the first GPU limit (pod.go:831-878, isGPUResourceKey)."""
    limits, requests = resources.get("limits", {}), resources.get("requests", {})
    if "num-cpus" not in params:
        cpu = limits.get("cpu") or requests.get("cpu")
        if cpu and quantity(cpu):
            params["num-cpus"] = str(int(quantity(cpu)))
    if "memory" not in params and limits.get("memory"):
        params["memory"] = str(int(quantity(limits["memory"])))
    for key in sorted(limits):
        if "num-gpus" not in params and key.endswith("/gpu") and quantity(limits[key]):
            params["num-gpus"] = str(int(quantity(limits[key])))
    return params


def convert_param_map(params: Mapping[str, str]) -> str:
    """common/pod.go:917-944 convertParamMap: sorted keys; "true" is a bare flag, "false" is dropped,
    except for log-color and include-dashboard."""
    flags = []
    for key in sorted(params):
        value = params[key]
        if value.lower() in ("true", "false") and key not in ("log-color", "include-dashboard"):
            if value.lower() == "true":
                flags.append(f" --{key} ")
        else:
            flags.append(f" --{key}={value} ")
    return "".join(flags)


def ray_start_command(params: Mapping[str, str], head: bool) -> str:
    """common/pod.go:819-825."""
    return f"ray start --head {convert_param_map(params)}" if head else f"ray start {convert_param_map(params)}"


def container_command(container: Container, start_cmd: str) -> tuple[str, ...]:
    """common/pod.go:444-475 and utils/util.go:706-714: `/bin/bash -c -- "<user cmd> && ulimit -n 65536;
    ray start ..."` unless the user's command already contains "ray start" (then it is kept)."""
    user = " ".join(container.command) + " ".join(container.args)
    if "ray start" in user:
        return container.command + container.args
    generated = f"ulimit -n 65536; {start_cmd}"
    return ("/bin/bash", "-c", "--", f"{user} && {generated}" if user else generated)


def pod_labels(container: Container, cluster: Cluster, head: bool, group: str) -> dict[str, str]:
    """common/pod.go:602-626 labelPod, then pod.go:412-421: ray.io/serve is "true" on workers and
    "false" on the head until the RayService controller sees its proxy healthy."""
    labels = {"ray.io/is-ray-node": "yes", "ray.io/cluster": cluster.name, "ray.io/node-type": "head" if head else "worker",
              "ray.io/group": group, "ray.io/identifier": f"{cluster.name}-{'head' if head else 'worker'}",
              "app.kubernetes.io/name": "kuberay", "app.kubernetes.io/created-by": "kuberay-operator"}
    for key, value in container.labels.items():
        if key not in ("ray.io/node-type", "ray.io/group", "ray.io/cluster"):
            labels[key] = value
    labels["ray.io/serve"] = "false" if head else "true"
    return labels


def injected_env(head: bool, cluster: Cluster, head_port: str, start_cmd: str, labels: Mapping[str, str],
                 pod_name: str, existing: list[str]) -> list[tuple[str, str]]:
    """common/pod.go:642-742 setContainerEnvVars for a RayService's Ray container."""
    ip = "127.0.0.1" if head else cluster.head_fqdn  # utils.LOCAL_HOST for the head (constant.go:170)
    env: list[tuple[str, str]] = []
    if not head:
        env += [("FQ_RAY_IP", ip), ("RAY_IP", cluster.head_service)]
    env += [("RAY_CLUSTER_NAME", labels["ray.io/cluster"]), ("RAY_CLOUD_INSTANCE_ID", pod_name),
            ("RAY_NODE_TYPE_NAME", labels["ray.io/group"]), ("KUBERAY_GEN_RAY_START_CMD", start_cmd)]
    optional = [("RAY_PORT", head_port), ("RAY_timeout_ms_task_wait_for_death_info", "0"),
                ("RAY_gcs_server_request_timeout_seconds", "5"), ("RAY_SERVE_KV_TIMEOUT_S", "5"),
                ("RAY_ADDRESS", f"{ip}:{head_port}"), ("RAY_USAGE_STATS_KUBERAY_IN_USE", "1")]
    env += [(k, v) for k, v in optional if k not in existing]
    if head:
        env.append(("RAY_USAGE_STATS_EXTRA_TAGS", f"kuberay_version={VERSION};kuberay_crd=RayService"))
    if "RAY_DASHBOARD_ENABLE_K8S_DISK_USAGE" not in existing:
        env.append(("RAY_DASHBOARD_ENABLE_K8S_DISK_USAGE", "1"))
    return env


def added_mounts(container: Container, head: bool, autoscaling: bool) -> tuple[Mount, ...]:
    """common/pod.go:432-433 and 946-992: a /dev/shm emptyDir (medium Memory, sizeLimit the memory
    limit, else request) unless the container mounts something there already; with the in-tree
    autoscaler, the head also gets an emptyDir (no size limit) at /tmp/ray for the logs it shares with
    the autoscaler sidecar (pod.go:24-27,434-441)."""
    mounts = container.mounts
    mounted = {m.path for m in mounts}
    if "/dev/shm" not in mounted:
        memory = container.resources.get("limits", {}).get("memory") or container.resources.get("requests", {}).get("memory")
        size = None if memory is None else int(quantity(memory))
        mounts += (Mount("/dev/shm", Volume("shared-mem", "emptyDir", medium="Memory", size_limit=size)),)
    if head and autoscaling and "/tmp/ray" not in mounted:
        mounts += (Mount("/tmp/ray", Volume("ray-logs", "emptyDir")),)
    return mounts


def probes(container: Container, head: bool) -> dict[str, tuple[str, ...]]:
    """common/pod.go:337-407 initLivenessAndReadinessProbe: probes the user left out are injected (the
    worker's readiness also checks the Serve proxy, pod.go:392-404)."""
    # The -T values are the constants pod.go passes (constant.go:172-178), odd as the GCS one is.
    agent = WGET_HEALTH.format(timeout=2, port=DEFAULT_AGENT_PORT, path=AGENT_HEALTH_PATH)
    gcs = WGET_HEALTH.format(timeout=10, port=DEFAULT_DASHBOARD_PORT, path=GCS_HEALTH_PATH)
    commands = [agent, gcs] if head else [agent]
    result = dict(container.probes)
    result.setdefault("livenessProbe", ("bash", "-c", " && ".join(commands)))
    if "readinessProbe" not in result:
        if not head:
            proxy = WGET_HEALTH.format(timeout=10, port=container.ports.get("serve", DEFAULT_SERVING_PORT),
                                       path=PROXY_HEALTH_PATH)
            commands = commands + [proxy]
        result["readinessProbe"] = ("bash", "-c", " && ".join(commands))
    return result


@dataclass(frozen=True)
class RayPod:
    """A Ray container as KubeRay runs it."""
    container: Container
    name: str
    head: bool
    command: tuple[str, ...]
    labels: Mapping[str, str]
    start_params: Mapping[str, str]


def ray_pods(stack: Stack, cluster: Cluster) -> list[RayPod]:
    head_port = stack.head.ray_start_params.get("port", DEFAULT_GCS_PORT)
    pods = []
    for container in (stack.head, *stack.workers):
        head = container is stack.head
        group = HEAD_GROUP if head else container.pod.removeprefix("worker-")
        params = complete_start_params(container.ray_start_params, head, head_port, cluster.head_fqdn)
        params = add_resource_params(params, container.resources)
        start_cmd = ray_start_command(params, head)
        name = f"{cluster.name}-head" if head else f"{cluster.name}-{group}-worker"
        labels = pod_labels(container, cluster, head, group)
        env = injected_env(head, cluster, head_port, start_cmd, labels, name, container.env_names())
        completed = replace(container, env=container.env + tuple(env), mounts=added_mounts(container, head, stack.autoscaling),
                            probes=probes(container, head))
        pods.append(RayPod(completed, name, head, container_command(container, start_cmd), labels, params))
    return pods
