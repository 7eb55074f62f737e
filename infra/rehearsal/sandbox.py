"""bubblewrap's command line for one container, built from its manifest. Pure.

The sandbox: a root of nothing but the host's /usr and /etc read-only, the image environment and its
interpreter read-only (they stand in for the image's /opt/venv), the engine's stand-in read-only, the image's COPYed files read-only at
their image paths, the image user's home as an empty read-only directory; the container's runAsUser and
runAsGroup (a user namespace maps them); its own PID, UTS, IPC and network namespaces; a fresh tmpfs of
the emptyDir's sizeLimit for each emptyDir mount; a host directory for each volume claim mount; the
secret and config files read-only at their mount paths; /dev read-only but for /dev/shm; only the given
environment. The root is remounted read-only when the container asks for readOnlyRootFilesystem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from infra.rehearsal.image import Image
from infra.rehearsal.manifests import Container, RehearsalError

# A container runtime gives every container a 64 MiB /dev/shm unless the pod mounts one (containerd's
# and Docker's default shm size).
RUNTIME_SHM_BYTES = 64 * 2**20
# The host's top-level directories a Debian/Ubuntu root needs; symlinks (merged /usr) are recreated.
ROOT_DIRS = ("/bin", "/sbin", "/lib", "/lib64")


@dataclass(frozen=True)
class HostPaths:
    """Host files the sandbox is built from (all bound read-only unless a volume says otherwise)."""
    venv: Path  # the image environment (stands in for the image's venv)
    interpreter_root: Path  # the directory holding the venv's base interpreter
    repo: Path  # the image's build context (COPY sources)
    etc_overrides: Mapping[str, Path]  # /etc/passwd, /etc/group, /etc/hosts, /etc/hostname
    volumes: Mapping[str, Path]  # volume name -> host directory (claims and files)
    root_links: Mapping[str, str]  # /bin -> usr/bin etc. on a merged-/usr host
    etc_entries: tuple[str, ...]  # the host's /etc entries
    # Further host files bound read-only, sandbox path -> host path: the engine's stand-in and what it reads.
    extra: Mapping[str, Path] = field(default_factory=dict)


def bwrap_args(container: Container, pod_name: str, image: Image, env: Mapping[str, str], host: HostPaths,
               command: tuple[str, ...], info_fd: int, block_fd: int) -> list[str]:
    args = ["bwrap", "--die-with-parent", "--unshare-user", "--unshare-pid", "--unshare-uts", "--unshare-ipc",
            "--unshare-net", "--unshare-cgroup-try", "--hostname", pod_name]
    if container.uid is not None:
        args += ["--uid", str(container.uid), "--gid", str(container.gid if container.gid is not None else container.uid)]
    args += ["--ro-bind", "/usr", "/usr"]
    for directory in ROOT_DIRS:
        if directory in host.root_links:
            args += ["--symlink", host.root_links[directory], directory]
        elif Path(directory).exists():
            args += ["--ro-bind", directory, directory]
    # /etc is a directory of the sandbox's root (so the image's COPY targets under it can be made),
    # holding the host's entries and the image's own passwd, group, hosts and hostname.
    for entry in sorted(host.etc_entries):
        target = f"/etc/{entry}"
        source = host.etc_overrides.get(target, Path("/etc") / entry)
        args += ["--ro-bind", str(source), target]
    if image.venv and image.venv != str(host.venv):
        args += ["--symlink", str(host.venv), image.venv]
    for source, target in image.copies:
        args += ["--ro-bind", str(host.repo / source), target]
    user = image.user(container.uid)
    for directory in {image.workdir, *([user.home] if user else [])}:
        args += ["--dir", directory]
    # Containers see the host's sysfs read-only (vLLM's CPU build reads the CPU topology there via lscpu).
    args += ["--proc", "/proc", "--dev", "/dev", "--ro-bind", "/sys", "/sys"]
    mounts = sorted(container.mounts, key=lambda m: m.path.count("/"))
    if not any(m.path == "/dev/shm" for m in mounts):
        args += ["--size", str(RUNTIME_SHM_BYTES), "--perms", "1777", "--tmpfs", "/dev/shm"]
    for mount in mounts:
        volume = mount.volume
        if volume.kind == "emptyDir":
            if volume.size_limit is not None:
                args += ["--size", str(volume.size_limit)]
            # emptyDir directories are world-writable (kubelet creates them 0777).
            args += ["--perms", "0777", "--tmpfs", mount.path]
            if mount.read_only:
                args += ["--remount-ro", mount.path]
        else:
            source = host.volumes[volume.name]
            if mount.sub_path:
                source = source / mount.sub_path
            bind = "--ro-bind" if mount.read_only or volume.kind == "files" else "--bind"
            args += [bind, str(source), mount.path]
    # The host interpreter and venv keep their host paths (their scripts name them), and are bound after the
    # pod's own mounts: a checkout under /tmp, as a CI clone may be, would else be hidden by the pod's /tmp.
    args += ["--ro-bind", str(host.interpreter_root), str(host.interpreter_root),
             "--ro-bind", str(host.venv), str(host.venv)]
    for target, source in sorted(host.extra.items()):
        args += ["--ro-bind", str(source), target]
    args += ["--remount-ro", "/dev"]
    if container.read_only_root:
        args += ["--remount-ro", "/"]
    args += ["--chdir", image.workdir, "--clearenv"]
    for name, value in env.items():
        args += ["--setenv", name, value]
    args += ["--info-fd", str(info_fd), "--block-fd", str(block_fd), "--", *command]
    return args


def _expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes expands $(VAR) from variables defined before it; $$(VAR) escapes."""
    return re.sub(r"\$\$\(|\$\((\w+)\)", lambda m: "$(" if m.group(1) is None else env.get(m.group(1), m.group(0)), value)


def container_env(container: Container, image: Image, pod_name: str, pod_ip: str, namespace: str,
                  secrets: Mapping[str, Mapping[str, str]], injected: Mapping[str, str],
                  strict: bool = True) -> dict[str, str]:
    """The environment a process in the container sees: the image's ENV, what the kubelet and the runtime
    add (HOSTNAME, HOME from the image's passwd entry, the KUBERNETES_SERVICE_* variables: `injected`),
    then the container's own env in order, with $(VAR) references and fieldRef/secretKeyRef resolved.
    strict=False skips references to secrets that do not exist yet (for the static checks)."""
    env = dict(image.env)
    env["HOSTNAME"] = pod_name
    env.update(injected)
    fields = {"metadata.name": pod_name, "metadata.namespace": namespace, "status.podIP": pod_ip,
              "spec.nodeName": "rehearsal-node", "status.hostIP": pod_ip}
    for name, value in container.env:
        if isinstance(value, str):
            env[name] = _expand(value, env)
        elif "fieldRef" in value:
            path = value["fieldRef"]["fieldPath"]
            if path.startswith("metadata.labels['"):
                env[name] = container.labels.get(path[len("metadata.labels['"):-2], "")
            elif path in fields:
                env[name] = fields[path]
            else:
                raise RehearsalError(f"container {container.name}: env {name} uses fieldRef {path}, which the rehearsal does not know")
        elif "secretKeyRef" in value or "configMapKeyRef" in value:
            ref = value.get("secretKeyRef") or value["configMapKeyRef"]
            data = secrets.get(ref["name"])
            if data is None or ref["key"] not in data:
                if ref.get("optional") or not strict:
                    continue
                raise RehearsalError(f"container {container.name}: env {name} reads {ref['name']}/{ref['key']}, which does not exist")
            env[name] = data[ref["key"]]
        else:
            raise RehearsalError(f"container {container.name}: env {name}: valueFrom {sorted(value)} is not supported")
    env.setdefault("HOME", image.home(container.uid))
    return env
