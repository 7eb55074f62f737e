"""The rehearsal itself: start the head and the workers as KubeRay would, submit serveConfigV2 as KubeRay
does, wait for RUNNING, run the probes, check which paths answer without the key, run the smoke Job, and
stop everything by PID. Returns the report; raises nothing for a stack that fails (the report says why).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import secrets as secrets_module
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping

from infra import pins
from infra.rehearsal import kuberay, write_paths
from infra.rehearsal.image import REPO_ROOT, Image, serving_image
from infra.rehearsal.cluster_dns import ClusterDns
from infra.rehearsal.kube_api import KubeApi, make_certificate
from infra.rehearsal.manifests import Container, Mount, RehearsalError, Stack, Volume, load_stack
from infra.rehearsal.processes import PodNetwork, Processes, Sandbox
from infra.rehearsal.sandbox import HostPaths, bwrap_args, container_env
from infra.rehearsal.substitutions import for_cpu, machine_substitutions, serve_config

# The image's own packages but the engine (scripts/image_env.py); vLLM's CPU build stands in for the engine.
IMAGE_ENV = REPO_ROOT / ".venv-image"
SERVING_VENV = REPO_ROOT / ".venv-serving"
TINY_MODEL_BUILDER = REPO_ROOT / "tests" / "serving" / "tiny_model.py"
MODEL_DIR_NAME = "rehearsal-tiny-qwen2"
SERVICE_ACCOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
# /etc files a pod gets from the image's user database and from the kubelet, not from the host.
KUBELET_ETC = ("passwd", "group", "hosts", "hostname", "resolv.conf")
# Mounts that hold no files a process could fill: /proc, and the device nodes every container has.
NOT_STORAGE = ("proc", "devtmpfs", "devpts", "mqueue", "sysfs")
# Paths checked without the key: the OpenAI API, vLLM's own extras, and the health path.
AUTH_PATHS = (("GET", "/v1/models"), ("POST", "/tokenize"), ("GET", "/metrics"), ("GET", "/health"))
# Without the key a path must refuse (401/403); the health path may answer. A 404 is not a refusal:
# vLLM answers 404 for a model it does not serve, after it processed the request.
CLOSED = (401, 403)
OPEN_BY_DESIGN = ("/health",)


@dataclass(frozen=True)
class Budget:
    """Deadlines (seconds) for each wait; none is a sleep, each names what it waited for."""
    ray_ready: float = 180.0
    serve_running: float = 600.0
    smoke: float = 600.0
    stop_grace: float = 15.0


@dataclass
class Report:
    ok: bool = True
    failures: list[str] = field(default_factory=list)
    sandbox: dict = field(default_factory=dict)
    substitutions: list[dict] = field(default_factory=list)
    serve_status: dict = field(default_factory=dict)
    smoke: dict = field(default_factory=dict)
    auth: dict = field(default_factory=dict)
    probes: dict = field(default_factory=dict)
    static_checks: list[dict] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    leftover_processes: list[int] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.ok = False
        self.failures.append(message)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def explain_log(log: str, container: Container) -> str:
    """The cause, named, when a container died writing to its read-only root."""
    match = re.search(r"Read-only file system: '([^']+)'", log)
    if not match:
        return ""
    path = match.group(1)
    mount = container.mount_at(path)
    where = "the read-only root filesystem" if mount is None else f"the read-only mount {mount.path}"
    return (f" (container {container.name} writes {path}, which is on {where}: the stack needs a writable "
            f"mount (an emptyDir) there)")


def explain_serve(message: str, config: dict, app_name: str) -> str:
    """The cause, named, when Serve could not import the application."""
    if not re.search(r"ModuleNotFoundError|ImportError|No module named|has no attribute", message):
        return ""
    path = next((a.get("import_path") for a in config.get("applications", []) if a.get("name") == app_name), "?")
    return f" (serveConfigV2 import_path {path!r} does not import in the image)"


class Clock:
    def __init__(self, report: Report) -> None:
        self.report = report

    def lap(self, name: str, since: float) -> float:
        now = time.monotonic()
        self.report.timings[name] = round(now - since, 1)
        return now


def require_tools() -> None:
    missing = [tool for tool in ("bwrap", "unshare", "nsenter", "ip", "openssl") if shutil.which(tool) is None]
    if missing:
        raise RehearsalError(f"the rehearsal needs {', '.join(missing)} on PATH; install with "
                             "`apt-get install -y bubblewrap util-linux iproute2 openssl`")
    if os.geteuid() != 0:
        raise RehearsalError("the rehearsal builds a pod network (network namespaces, a bridge, veths) and maps "
                             "the pods' users: run it as root (CI does)")
    for venv, target in ((IMAGE_ENV, "install-image-env"), (SERVING_VENV, "install-serving")):
        if not (venv / ".installed").exists():
            raise RehearsalError(f"{venv} is not installed; run `make {target}`")


def installed(venv: Path, package: str) -> str:
    site = next(venv.glob("lib/python*/site-packages"))
    dist = sorted(site.glob(f"{package}-*.dist-info")) + sorted(site.glob(f"{package}_cpu-*.dist-info"))
    return dist[0].name.removesuffix(".dist-info") if dist else "missing"


def venv_versions() -> dict[str, tuple[str, str]]:
    """The engine's pinned version and what stands in for it; Ray runs at its pin (refused otherwise)."""
    ray = installed(IMAGE_ENV, "ray")
    if ray != f"ray-{pins.RAY_VERSION}":
        raise RehearsalError(f"{IMAGE_ENV} holds {ray}, not the image's Ray {pins.RAY_VERSION}: "
                             "run `make install-image-env`")
    return {"vllm": (pins.VLLM_VERSION, installed(SERVING_VENV, "vllm"))}


def engine_standin():
    """tests/serving/engine_standin.py, the engine's stand-in (imported late: it reads the pinned wheel)."""
    from tests.serving import engine_standin as standin

    return standin


def tiny_model(cache: Path) -> Path:
    """The tiny model, built once per version of its builder (a few seconds) with the serving venv."""
    digest = hashlib.sha256(TINY_MODEL_BUILDER.read_bytes()).hexdigest()[:12]
    target = cache / f"tiny-qwen2-{digest}"
    if not (target / "config.json").exists():
        result = subprocess.run([str(SERVING_VENV / "bin" / "python"), str(TINY_MODEL_BUILDER), str(target)],
                                capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise RehearsalError(f"building the tiny model failed:\n{result.stderr[-2000:]}")
    return target


def replica_hosts(stack: Stack, cluster: kuberay.Cluster, config: dict) -> list[kuberay.RayPod]:
    """The Ray containers a Serve replica can land on (enough logical CPUs and GPUs for its options)."""
    needs = [d.get("ray_actor_options", {}) for app in config.get("applications", []) for d in app.get("deployments", [])]
    hosts = []
    for pod in kuberay.ray_pods(stack, cluster):
        params = pod.start_params
        if any(float(params.get("num-cpus", 0)) >= float(n.get("num_cpus", 1)) and
               float(params.get("num-gpus", 0)) >= float(n.get("num_gpus", 0)) for n in needs or [{}]):
            hosts.append(pod)
    return hosts


def static_checks(stack: Stack, image: Image, report: Report) -> list[str]:
    """vLLM's write paths (write_paths) in each container a replica can land on, under the manifest's env."""
    cluster = kuberay.cluster_of(stack)
    config = serve_config(stack)
    failures = []
    for pod in replica_hosts(stack, cluster, config):
        env = container_env(pod.container, image, pod.name, "", stack.namespace, {}, {}, strict=False)
        for result in write_paths.check(pod.container, env):
            report.static_checks.append({"container": pod.container.name, "writer": result.write.writer,
                                         "path": result.write.path, "writable": result.writable,
                                         "gpu_only": result.write.gpu_only, "source": result.write.source})
            if not result.writable:
                failures.append(result.message)
    return failures


class Rehearsal:
    def __init__(self, manifests: Path, workdir: Path, budget: Budget, keep_going: bool,
                 progress: Callable[[str], None], image_context: Path = REPO_ROOT) -> None:
        self.manifests, self.workdir, self.budget = manifests, workdir, budget
        self.keep_going, self.progress = keep_going, progress
        self.report = Report()
        self.processes = Processes()
        self.image_context = image_context
        self.image = serving_image(image_context)
        self.secrets: dict[str, dict[str, str]] = {}
        self.sandboxes: dict[str, Sandbox] = {}
        self.api_token = secrets_module.token_hex(16)
        self.api: KubeApi | None = None
        self.dns: ClusterDns | None = None

    # ---- files the sandboxes are built from ----
    def _secret_files(self, volume: Volume, pod_name: str, namespace: str) -> Path:
        """The files of a secret, configMap or projected volume, as the kubelet writes them."""
        target = self.workdir / "volumes" / pod_name / volume.name
        target.mkdir(parents=True, exist_ok=True)
        fields = {"metadata.name": pod_name, "metadata.namespace": namespace}
        for path, source, key, mode in volume.items:
            if source in ("serviceAccountToken", "downwardAPI"):
                file = target / path
                file.write_text(self.api_token if source == "serviceAccountToken" else fields.get(key, ""))
                file.chmod(mode)
                continue
            optional = source.endswith("?")
            kind, _, name = source.rstrip("?").partition("/")
            data = self.secrets.get(name)
            if data is None:
                if optional:
                    continue
                raise RehearsalError(f"volume {volume.name} needs {kind} {name}, which is neither in the manifests "
                                     "nor generated")
            for item_key, value in data.items():
                if key in ("*", item_key):
                    file = target / (path or item_key)
                    file.parent.mkdir(parents=True, exist_ok=True)
                    file.write_text(value)
                    file.chmod(mode)
        return target

    def _generate_secrets(self, stack: Stack) -> None:
        """Secrets the program creates from stack config (not in the manifests; docs/manifests.md): a random
        value for each required key; optional ones stay absent, as on a cluster where they were not made."""
        self.secrets = {k: dict(v) for k, v in {**stack.config_maps, **stack.secrets}.items()}
        for container in (stack.head, *stack.workers, *([stack.job] if stack.job else [])):
            for mount in container.mounts:
                for _, source, key, _ in mount.volume.items:
                    if source.endswith("?"):
                        continue
                    name = source.partition("/")[2]
                    if source.startswith("secret/") and key not in self.secrets.get(name, {}):
                        self.secrets.setdefault(name, {})[key] = secrets_module.token_hex(20)

    def _host_paths(self, pod_name: str, ip: str, dns: Mapping[str, str], volumes: Mapping[str, Path]) -> HostPaths:
        etc = self.workdir / "etc" / pod_name
        etc.mkdir(parents=True, exist_ok=True)
        passwd = Path("/etc/passwd").read_text().rstrip("\n").splitlines()
        group = Path("/etc/group").read_text().rstrip("\n").splitlines()
        for user in self.image.users:
            passwd.append(f"{user.name}:x:{user.uid}:{user.gid}::{user.home}:/usr/sbin/nologin")
            group.append(f"{user.name}:x:{user.gid}:")
        (etc / "passwd").write_text("\n".join(passwd) + "\n")
        (etc / "group").write_text("\n".join(group) + "\n")
        # The kubelet's /etc/hosts and resolv.conf for a pod (dnsPolicy ClusterFirst).
        (etc / "hosts").write_text(f"127.0.0.1\tlocalhost\n{ip}\t{pod_name}\n")
        (etc / "hostname").write_text(pod_name + "\n")
        (etc / "resolv.conf").write_text(f"search {dns['search']}\nnameserver {dns['nameserver']}\noptions ndots:5\n")
        interpreter = Path(os.path.realpath(IMAGE_ENV / "bin" / "python")).parents[1]
        links = {d: os.readlink(d) for d in ("/bin", "/sbin", "/lib", "/lib64") if os.path.islink(d)}
        extra = {target: source for target, source in engine_standin().host_paths().items()
                 if target not in (str(IMAGE_ENV), str(interpreter))}
        return HostPaths(IMAGE_ENV, interpreter, self.image_context,
                         {f"/etc/{n}": etc / n for n in KUBELET_ETC}, volumes, links,
                         tuple(sorted(set(os.listdir("/etc")) | set(KUBELET_ETC))), extra)

    # ---- the run ----
    def run(self) -> Report:
        started = time.monotonic()
        clock = Clock(self.report)
        try:
            self._run(clock)
        except RehearsalError as error:
            self.report.fail(str(error))
        finally:
            t = time.monotonic()
            for server in (self.api, self.dns):
                if server is not None:
                    server.stop()
            self.processes.stop_all(self.budget.stop_grace)
            self.report.leftover_processes = self.processes.survivors()
            if self.report.leftover_processes:
                self.report.fail(f"processes survived the rehearsal: {self.report.leftover_processes}")
            clock.lap("stop_s", t)
            self.report.timings["total_s"] = round(time.monotonic() - started, 1)
        return self.report

    def _run(self, clock: Clock) -> None:
        t = time.monotonic()
        original = load_stack(self.manifests)
        static = static_checks(original, self.image, self.report)
        for message in static:
            self.report.fail(message)
        if static and not self.keep_going:
            return
        versions = venv_versions()
        claim_mounts = [m for w in original.workers for m in w.mounts if m.volume.kind == "claim"]
        if not claim_mounts:
            raise RehearsalError("no worker mounts a volume claim for the model; the rehearsal puts the tiny model there")
        model_mount = claim_mounts[0]
        standin = engine_standin()
        stack, config, subs = for_cpu(original, f"{model_mount.path.rstrip('/')}/{MODEL_DIR_NAME}", versions,
                                      standin.standin_environment())
        self._generate_secrets(stack)
        cluster = kuberay.cluster_of(stack)
        pods = kuberay.ray_pods(stack, cluster)
        network = PodNetwork(deadline_s=self.budget.ray_ready + self.budget.serve_running + self.budget.smoke + 600)
        self.processes.network = network
        network.start()

        ips = {pod.name: f"{network.gateway.rsplit('.', 1)[0]}.{10 + i}" for i, pod in enumerate(pods)}
        job_name = f"{original.rayservice}-smoke-rehearsal"
        ips[job_name] = f"{network.gateway.rsplit('.', 1)[0]}.{10 + len(pods)}"
        records, service_targets = self._dns_records(stack, cluster, pods, ips)
        self.dns = ClusterDns(records)
        network.call(self.dns.serve, network.gateway)
        dns = {"search": f"{stack.namespace}.svc.{kuberay.CLUSTER_DOMAIN} svc.{kuberay.CLUSTER_DOMAIN} "
                           f"{kuberay.CLUSTER_DOMAIN}", "nameserver": network.gateway}
        self.report.substitutions = [s.as_dict() for s in subs + machine_substitutions(
            self.image.venv, str(IMAGE_ENV), service_targets, sorted(standin.host_paths()))]

        # The Kubernetes API stand-in, its CA published as the kube-root-ca.crt ConfigMap (as in every
        # namespace), and the token the service-account volumes carry.
        cert_dir = self.workdir / "apiserver"
        cert_dir.mkdir(exist_ok=True)
        cert, key = make_certificate(cert_dir, network.gateway)
        self.secrets["kube-root-ca.crt"] = {"ca.crt": cert.read_text()}
        self.api = KubeApi(self.api_token, stack.namespace)
        network.call(self.api.serve, network.gateway, 443, cert, key)
        injected = {"KUBERNETES_SERVICE_HOST": network.gateway, "KUBERNETES_SERVICE_PORT": "443",
                    "KUBERNETES_SERVICE_PORT_HTTPS": "443", "KUBERNETES_PORT": f"tcp://{network.gateway}:443"}

        # One host directory per claim, shared by the pods that mount it; the tiny model goes on the
        # worker's. The user namespace maps root's files to the container's user, as fsGroup would.
        claims: dict[str, Path] = {}
        for pod in pods:
            for mount in pod.container.mounts:
                if mount.volume.kind == "claim":
                    claims[mount.volume.name] = self.workdir / "claims" / mount.volume.claim
                    claims[mount.volume.name].mkdir(parents=True, exist_ok=True)
        model = tiny_model(Path(tempfile.gettempdir()) / "qwen2vl-rehearsal-models")
        shutil.copytree(model, claims[model_mount.volume.name] / MODEL_DIR_NAME, dirs_exist_ok=True)
        t = clock.lap("prepare_s", t)

        for pod in pods:
            sandbox = self._start(pod.container, pod.name, pod.command, ips[pod.name], dns, claims, injected,
                                  stack.namespace, network)
            self._wait_probe(sandbox, pod.container, "readinessProbe" if pod.head else "livenessProbe",
                             self.budget.ray_ready, f"the Ray {'head' if pod.head else 'worker'} {pod.name}")
            self.report.sandbox[pod.container.name] = self._describe(sandbox, pod.container)
        t = clock.lap("ray_ready_s", t)

        head_ip = ips[pods[0].name]
        self._submit(network, head_ip, config)
        self._wait_running(network, head_ip, config)
        t = clock.lap("serve_running_s", t)

        for pod in pods:
            self.report.probes[pod.container.name] = {
                kind: self.sandboxes[pod.name].exec(command, 30).returncode == 0
                for kind, command in pod.container.probes.items()}
            if not all(self.report.probes[pod.container.name].values()):
                self.report.fail(f"probe failed in {pod.container.name}: {self.report.probes[pod.container.name]}")
        serve_ip = ips[next(p.name for p in pods if p.labels.get("ray.io/serve") == "true")]
        serve_port = pods[0].container.ports.get("serve", kuberay.DEFAULT_SERVING_PORT)
        served = next((a.get("args", {}).get("served_model_name") for a in config.get("applications", [])), None)
        self._auth(network, serve_ip, serve_port, served or "")
        t = clock.lap("probes_and_auth_s", t)

        if stack.job is not None:
            self._smoke(stack, network, job_name, ips[job_name], dns, claims, injected)
            clock.lap("smoke_s", t)

    def _dns_records(self, stack: Stack, cluster: kuberay.Cluster, pods, ips) -> tuple[dict[str, str], dict[str, str]]:
        """The cluster DNS's A records: each Service's name pointing at a pod it selects (KubeRay's head and
        serve Services, and those in the manifests; no ClusterIP, so no port remapping). A pod finds its
        own name in /etc/hosts, as on a cluster."""
        labels = {pod.name: pod.labels for pod in pods}
        services: dict[str, dict[str, str]] = {
            cluster.head_service: {"ray.io/cluster": cluster.name, "ray.io/node-type": "head"},
            f"{stack.rayservice}-head-svc": {"ray.io/cluster": cluster.name, "ray.io/node-type": "head"},
            stack.serve_service: {"ray.io/cluster": cluster.name, "ray.io/serve": "true"},
        }
        for service in stack.services:
            ports = service.get("spec", {}).get("ports", [])
            for port in ports:
                target = port.get("targetPort", port["port"])
                if isinstance(target, int) and target != port["port"]:
                    raise RehearsalError(f"Service {service['metadata']['name']} maps port {port['port']} to "
                                         f"{port['targetPort']}; the rehearsal resolves Services to pod IPs and "
                                         "cannot remap ports")
            services[service["metadata"]["name"]] = dict(service.get("spec", {}).get("selector", {}))
        records, targets = {}, {}
        for name, selector in services.items():
            # Serving pods first: the worker holds the replica, the head's serve label starts "false".
            chosen = next((p for p in sorted(labels, key=lambda n: labels[n].get("ray.io/node-type") == "head")
                           if selector and all(labels[p].get(k) == v for k, v in selector.items())), None)
            if chosen is None:
                continue
            fqdn = f"{name}.{stack.namespace}.svc.{kuberay.CLUSTER_DOMAIN}"
            records[fqdn] = ips[chosen]
            targets[fqdn] = f"{ips[chosen]} (pod {chosen})"
        return records, targets

    def _start(self, container: Container, pod_name: str, command: tuple[str, ...], ip: str, dns, claims,
               injected, namespace: str, network: PodNetwork) -> Sandbox:
        env = container_env(container, self.image, pod_name, ip, namespace, self.secrets, injected)
        volumes = dict(claims)
        for mount in container.mounts:
            if mount.volume.kind == "files":
                volumes[mount.volume.name] = self._secret_files(mount.volume, pod_name, namespace)
        host = self._host_paths(pod_name, ip, dns, volumes)
        sandbox = Sandbox(container.name, self.workdir / f"{pod_name}.log", env=env, uid=container.uid,
                          gid=container.gid, workdir=self.image.workdir)
        self.processes.add(sandbox)
        self.sandboxes[pod_name] = sandbox
        self.progress(f"starting {pod_name} ({container.name}) at {ip}")
        sandbox.start(lambda info, block: bwrap_args(container, pod_name, self.image, env, host, command, info, block),
                      network, ip)
        self.processes.remember(sandbox)
        return sandbox

    def _describe(self, sandbox: Sandbox, container: Container) -> dict:
        """What the running sandbox really allows, read from inside it."""
        ident = sandbox.exec(("id", "-u"), 20).stdout.strip()
        mountinfo = sandbox.exec(("cat", "/proc/self/mountinfo"), 20).stdout
        writable, root_ro = [], None
        for line in mountinfo.splitlines():
            fields = line.split()
            path, options, fstype = fields[4], fields[5].split(","), line.split(" - ")[1].split()[0]
            if path == "/":
                root_ro = "ro" in options
            elif "rw" in options and fstype not in NOT_STORAGE:
                writable.append(path)
        return {"uid": int(ident) if ident.isdigit() else ident, "read_only_root": root_ro,
                "writable": sorted(set(writable)), "manifest_read_only_root": container.read_only_root}

    def _wait_probe(self, sandbox: Sandbox, container: Container, kind: str, deadline_s: float, what: str) -> None:
        command = container.probes.get(kind)
        deadline = time.monotonic() + deadline_s
        while True:
            if sandbox.exited() is not None:
                raise RehearsalError(f"{what} exited with code {sandbox.exited()} before it was ready"
                                     f"{explain_log(sandbox.log_tail(), container)}:\n{sandbox.log_tail()}")
            if command is None or sandbox.exec(command, 15).returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RehearsalError(f"{what} was not ready ({kind} `{' '.join(command)}`) after {deadline_s:.0f} s:\n"
                                     f"{sandbox.log_tail()}")
            time.sleep(1)  # the probe's period; the deadline above bounds the wait

    def _submit(self, network: PodNetwork, head_ip: str, config: dict) -> None:
        """As KubeRay: serveConfigV2 parsed from YAML, PUT as JSON (rayservice_controller.go:821-833), and PUT
        again after a failure, as its reconcile loop does every 2 s (:40; the PUT is idempotent, :1001-1003):
        on a busy machine the dashboard can take longer than a request's timeout to start Serve. A 4xx
        (the dashboard refusing the config itself) fails at once."""
        body = json.dumps(config).encode()
        deadline = time.monotonic() + self.budget.serve_running
        while True:
            status, text = network.call(_request, head_ip, kuberay.DEFAULT_DASHBOARD_PORT, "PUT",
                                        kuberay.SERVE_APPLICATIONS_PATH, body, kuberay.DASHBOARD_CLIENT_HEADERS)
            if 200 <= status <= 299:
                return
            if 400 <= status <= 499 or time.monotonic() > deadline:
                raise RehearsalError(f"PUT {kuberay.SERVE_APPLICATIONS_PATH} answered {status}: {text[:2000]}"
                                     f"{self._ray_logs('dashboard.log', 'the head dashboard')}")
            self.progress(f"PUT {kuberay.SERVE_APPLICATIONS_PATH} answered {status} ({text[:200]}); again in 2 s")
            time.sleep(2)  # KubeRay's requeue period; bounded by the deadline above

    def _wait_running(self, network: PodNetwork, head_ip: str, config: dict) -> None:
        names = [app.get("name", "default") for app in config.get("applications", [])]
        deadline = time.monotonic() + self.budget.serve_running
        while True:
            status, text = network.call(_request, head_ip, kuberay.DEFAULT_DASHBOARD_PORT, "GET",
                                        kuberay.SERVE_APPLICATIONS_PATH, None, kuberay.DASHBOARD_CLIENT_HEADERS)
            apps = json.loads(text).get("applications", {}) if status == 200 else {}
            self.report.serve_status = {name: {"status": app.get("status"), "message": app.get("message", "")[-3000:],
                                               "deployments": {d: s.get("status") for d, s in
                                                               app.get("deployments", {}).items()}}
                                        for name, app in apps.items()}
            states = [apps.get(n, {}).get("status") for n in names]
            if states and all(s == "RUNNING" for s in states):
                return
            failed = [n for n in names if apps.get(n, {}).get("status") in ("DEPLOY_FAILED", "UNHEALTHY")]
            if failed:
                raise RehearsalError(f"Serve application {failed[0]} is {apps[failed[0]]['status']}"
                                     f"{explain_serve(apps[failed[0]].get('message', ''), config, failed[0])}: "
                                     f"{apps[failed[0]].get('message', '')[-3000:]}{self._replica_logs()}")
            if time.monotonic() > deadline:
                raise RehearsalError(f"Serve applications {names} not RUNNING after {self.budget.serve_running:.0f} s: "
                                     f"{self.report.serve_status}{self._replica_logs()}")
            time.sleep(2)  # the status poll period; bounded by the deadline above

    def _replica_logs(self, lines: int = 40) -> str:
        """The end of the Serve replicas' logs in every Ray container (Ray keeps them under its temp dir)."""
        return self._ray_logs("serve/replica_*.log", "Serve replica", lines)

    def _ray_logs(self, pattern: str, what: str, lines: int = 40) -> str:
        """The end of the Ray logs matching `pattern` (under the session's logs/) in every Ray container."""
        text = ""
        for name, sandbox in self.sandboxes.items():
            result = sandbox.exec(("sh", "-c", f"tail -n {lines} /tmp/ray/session_latest/logs/{pattern}"), 30)
            if result.stdout.strip():
                text += f"\n--- {what} log in {name} ---\n{result.stdout}"
        return text

    def _auth(self, network: PodNetwork, ip: str, port: int, model: str) -> None:
        for method, path in AUTH_PATHS:
            body = json.dumps({"model": model, "prompt": "the model"}).encode() if method == "POST" else None
            status, _ = network.call(_request, ip, port, method, path, body, {"Content-Type": "application/json"})
            self.report.auth[path] = status
            if path not in OPEN_BY_DESIGN and status not in CLOSED:
                self.report.fail(f"{method} {path} answers {status} without the API key (expected 401)")

    def _smoke(self, stack: Stack, network: PodNetwork, job_name: str, ip: str, dns, claims, injected) -> None:
        job = stack.job
        if job.automount_token:
            # The kubelet's kube-api-access volume: token, the cluster CA, the namespace.
            token_volume = Volume("kube-api-access", "files", items=(
                ("token", "serviceAccountToken", "token", 0o644), ("ca.crt", "configMap/kube-root-ca.crt", "ca.crt", 0o644),
                ("namespace", "downwardAPI", "metadata.namespace", 0o644)))
            job = replace(job, mounts=job.mounts + (Mount(SERVICE_ACCOUNT_PATH, token_volume, read_only=True),))
        sandbox = self._start(job, job_name, job.command + job.args, ip, dns, claims, injected, stack.namespace, network)
        deadline = time.monotonic() + self.budget.smoke
        while sandbox.exited() is None:
            if time.monotonic() > deadline:
                raise RehearsalError(f"the smoke Job did not finish within {self.budget.smoke:.0f} s:\n{sandbox.log_tail()}")
            time.sleep(1)  # polling the Job's exit; bounded by the deadline above
        stored = list(self.api.config_maps.values())
        self.report.smoke = {"exit_code": sandbox.exited(), "output": sandbox.log_tail(20),
                             "report": json.loads(stored[0]["data"]["report.json"]) if stored else None}
        if sandbox.exited() != 0:
            self.report.fail(f"the smoke Job exited with code {sandbox.exited()}:\n{sandbox.log_tail()}")


def _request(ip: str, port: int, method: str, path: str, body: bytes | None = None,
             headers: Mapping[str, str] | None = None, timeout: float = 30.0) -> tuple[int, str]:
    conn = http.client.HTTPConnection(ip, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    except OSError as error:
        return 0, f"{type(error).__name__}: {error}"
    finally:
        conn.close()


def rehearse(manifests: Path, workdir: Path | None = None, budget: Budget = Budget(), keep_going: bool = False,
             progress: Callable[[str], None] = lambda _: None, image_context: Path = REPO_ROOT) -> dict:
    """`image_context`: where the image's Dockerfile and COPY sources come from (default: this checkout)."""
    require_tools()
    with tempfile.TemporaryDirectory(prefix="rehearsal-") as scratch:
        report = Rehearsal(manifests, workdir or Path(scratch), budget, keep_going, progress, image_context).run()
    return report.as_dict()
