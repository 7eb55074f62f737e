"""What the rendered manifests say a container is: its command, env, mounts (with the volume behind each)
and the user it runs as. Pure: YAML in, dataclasses out; a manifest the rehearsal cannot honour raises
RehearsalError naming the object and the field.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import yaml


class RehearsalError(RuntimeError):
    """The rehearsal found the stack would not serve (or cannot be rehearsed); the message names the cause."""


@dataclass(frozen=True)
class Volume:
    name: str
    kind: str  # "emptyDir" | "claim" | "files"
    medium: str = ""
    size_limit: int | None = None  # bytes
    claim: str = ""
    # kind "files": relative path -> (source, key, mode); source is "secret/NAME" or "configMap/NAME"
    items: tuple[tuple[str, str, str, int], ...] = ()


@dataclass(frozen=True)
class Mount:
    path: str
    volume: Volume
    read_only: bool = False
    sub_path: str = ""

    @property
    def writable(self) -> bool:
        return not self.read_only and self.volume.kind in ("emptyDir", "claim")


@dataclass(frozen=True)
class Container:
    pod: str  # the pod's role in the rehearsal: head, worker-<group>, job
    name: str
    command: tuple[str, ...]
    args: tuple[str, ...]
    env: tuple[tuple[str, Any], ...]  # (name, value or valueFrom mapping), in manifest order
    mounts: tuple[Mount, ...]
    uid: int | None
    gid: int | None
    read_only_root: bool
    probes: Mapping[str, tuple[str, ...]]  # liveness/readiness/startup -> exec command
    labels: Mapping[str, str]
    resources: Mapping[str, Mapping[str, str]]
    ports: Mapping[str, int]
    ray_start_params: Mapping[str, str] = field(default_factory=dict)
    automount_token: bool = False
    replicas: tuple[int, int, int] = (1, 1, 1)  # a worker group's replicas, minReplicas, maxReplicas

    def env_names(self) -> list[str]:
        return [name for name, _ in self.env]

    def with_env(self, name: str, value: str) -> "Container":
        kept = tuple((n, v) for n, v in self.env if n != name)
        return replace(self, env=kept + ((name, value),))

    def mount_at(self, path: str) -> Mount | None:
        """The mount that holds `path` (the longest mount path that is a prefix of it), or None (root)."""
        best = None
        for mount in self.mounts:
            root = mount.path.rstrip("/") or "/"
            if path == root or path.startswith(root.rstrip("/") + "/"):
                if best is None or len(root) > len(best.path.rstrip("/")):
                    best = mount
        return best


@dataclass(frozen=True)
class Stack:
    namespace: str
    rayservice: str
    serve_config_v2: str
    serve_service: str  # the Service KubeRay makes for Serve (common/service.go:181-260)
    head: Container
    workers: tuple[Container, ...]
    job: Container | None
    services: tuple[Mapping[str, Any], ...]
    secrets: Mapping[str, Mapping[str, str]]  # name -> key -> value (only those in the manifests)
    config_maps: Mapping[str, Mapping[str, str]]
    autoscaling: bool = False  # rayClusterConfig.enableInTreeAutoscaling


_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_SUFFIX = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30,
           "Ti": 2**40, "m": 1e-3}


def quantity(text: str | int | float) -> float:
    """A Kubernetes resource quantity as a number (bytes, cores)."""
    match = _QUANTITY.match(str(text))
    if not match or match.group(2) not in _SUFFIX:
        raise RehearsalError(f"cannot read the resource quantity {text!r}")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


def load_documents(directory: Path) -> list[dict]:
    if not directory.is_dir():
        raise RehearsalError(f"--manifests {directory}: not a directory (render it: .venv/bin/python scripts/render.py)")
    docs = []
    for path in sorted(directory.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") and doc.get("kind") != "Kustomization":
                docs.append(doc)
    return docs


def _volume(spec: Mapping[str, Any], where: str) -> Volume:
    name = spec["name"]
    if "emptyDir" in spec:
        empty = spec["emptyDir"] or {}
        size = empty.get("sizeLimit")
        return Volume(name, "emptyDir", medium=empty.get("medium", ""),
                      size_limit=None if size is None else int(quantity(size)))
    if "persistentVolumeClaim" in spec:
        return Volume(name, "claim", claim=spec["persistentVolumeClaim"]["claimName"])
    if "ephemeral" in spec:
        # A generic ephemeral volume: a claim made for the pod from the template, named <pod>-<volume>.
        return Volume(name, "claim", claim=name)
    items = []
    if "projected" in spec:
        default_mode = spec["projected"].get("defaultMode", 0o644)
        for source in spec["projected"]["sources"]:
            if "serviceAccountToken" in source:
                items.append((source["serviceAccountToken"]["path"], "serviceAccountToken", "token", default_mode))
            elif "downwardAPI" in source:
                items.extend((item["path"], "downwardAPI", item["fieldRef"]["fieldPath"], item.get("mode", default_mode))
                             for item in source["downwardAPI"]["items"])
            elif "secret" in source or "configMap" in source:
                kind = "secret" if "secret" in source else "configMap"
                items.extend(_items(kind, source[kind], default_mode))
            else:
                raise RehearsalError(f"{where}: volume {name}: projected source {sorted(source)} is not supported")
        return Volume(name, "files", items=tuple(items))
    for kind, ref in (("secret", "secretName"), ("configMap", "name")):
        if kind in spec:
            body = dict(spec[kind])
            body.setdefault("name", body.get(ref))
            return Volume(name, "files", items=tuple(_items(kind, body, body.get("defaultMode", 0o644))))
    raise RehearsalError(f"{where}: volume {name}: kind {sorted(set(spec) - {'name'})} is not supported by the rehearsal")


def _items(kind: str, body: Mapping[str, Any], default_mode: int) -> list[tuple[str, str, str, int]]:
    source = f"{kind}/{body['name']}" + ("?" if body.get("optional") else "")
    if "items" not in body:
        return [("", source, "*", default_mode)]
    return [(item["path"], source, item["key"], item.get("mode", default_mode)) for item in body["items"]]


def _container(pod: str, pod_spec: Mapping[str, Any], labels: Mapping[str, str], where: str,
               ray_start_params: Mapping[str, str] | None = None) -> Container:
    container = pod_spec["containers"][0]
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    mounts = []
    for mount in container.get("volumeMounts", []):
        if mount["name"] not in volumes:
            raise RehearsalError(f"{where}: volumeMount {mount['mountPath']} names volume {mount['name']}, "
                                 "which the pod does not define")
        mounts.append(Mount(mount["mountPath"], _volume(volumes[mount["name"]], where), bool(mount.get("readOnly")),
                            mount.get("subPath", "")))
    pod_security = pod_spec.get("securityContext") or {}
    security = {**pod_security, **(container.get("securityContext") or {})}
    probes = {}
    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = container.get(kind)
        if probe:
            if "exec" not in probe:
                raise RehearsalError(f"{where}: {kind} is not an exec probe; the rehearsal runs exec probes only")
            probes[kind] = tuple(probe["exec"]["command"])
    return Container(
        pod=pod, name=container["name"], command=tuple(container.get("command", ())),
        args=tuple(container.get("args", ())),
        env=tuple((e["name"], e["value"] if "value" in e else e.get("valueFrom", {})) for e in container.get("env", [])),
        mounts=tuple(mounts), uid=security.get("runAsUser"), gid=security.get("runAsGroup"),
        read_only_root=bool(security.get("readOnlyRootFilesystem")), probes=probes, labels=dict(labels),
        resources=container.get("resources", {}),
        ports={p.get("name", str(p["containerPort"])): p["containerPort"] for p in container.get("ports", [])},
        ray_start_params=dict(ray_start_params or {}),
        automount_token=bool(pod_spec.get("automountServiceAccountToken", True)),
    )


def parse_stack(docs: list[dict]) -> Stack:
    by_kind: dict[str, list[dict]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    services = by_kind.get("RayService", [])
    if len(services) != 1:
        raise RehearsalError(f"expected one RayService in the manifests, found {len(services)}")
    rayservice = services[0]
    name, namespace = rayservice["metadata"]["name"], rayservice["metadata"].get("namespace", "default")
    cluster = rayservice["spec"]["rayClusterConfig"]
    head_group = cluster["headGroupSpec"]
    head_template = head_group["template"]
    head = _container("head", head_template["spec"], head_template.get("metadata", {}).get("labels", {}),
                      f"RayService {name} headGroupSpec", head_group.get("rayStartParams", {}))
    workers = []
    for group in cluster.get("workerGroupSpecs", []):
        template = group["template"]
        worker = _container(f"worker-{group['groupName']}", template["spec"],
                            template.get("metadata", {}).get("labels", {}),
                            f"RayService {name} workerGroupSpecs[{group['groupName']}]", group.get("rayStartParams", {}))
        replicas = int(group.get("replicas", 1))
        workers.append(replace(worker, replicas=(replicas, int(group.get("minReplicas", replicas)),
                                                 int(group.get("maxReplicas", replicas)))))
    jobs = by_kind.get("Job", [])
    job = None
    if jobs:
        template = jobs[0]["spec"]["template"]
        job = _container("job", template["spec"], template.get("metadata", {}).get("labels", {}),
                         f"Job {jobs[0]['metadata']['name']}")
    secrets = {}
    for secret in by_kind.get("Secret", []):
        data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
        data.update(secret.get("stringData") or {})
        secrets[secret["metadata"]["name"]] = data
    config_maps = {cm["metadata"]["name"]: dict(cm.get("data") or {}) for cm in by_kind.get("ConfigMap", [])}
    serve_config = rayservice["spec"].get("serveConfigV2")
    if not serve_config:
        raise RehearsalError(f"RayService {name}: spec.serveConfigV2 is empty; nothing would be served")
    serve_service = ((rayservice["spec"].get("serveService") or {}).get("metadata", {}).get("name")
                     or f"{name}-serve-svc")  # utils/util.go:300-302 GenerateServeServiceName
    return Stack(namespace, name, serve_config, serve_service, head, tuple(workers), job,
                 tuple(by_kind.get("Service", [])), secrets, config_maps, bool(cluster.get("enableInTreeAutoscaling")))


def load_stack(directory: Path) -> Stack:
    return parse_stack(load_documents(directory))
