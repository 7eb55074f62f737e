"""The rehearsal's processes: a network namespace that stands in for the pod network (a bridge, one veth
per pod), one bubblewrap sandbox per container, exec into a running sandbox (probes), and stopping all of
it by PID with a /proc scan that proves nothing survived.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, TypeVar

from infra.rehearsal.manifests import RehearsalError

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
POD_SUBNET = "10.244.0"  # the rehearsal's pod network: .1 is the bridge (the operator's side), pods from .10
BRIDGE = "rehearsal0"


def namespace_inode(pid: int, kind: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def pids_in_namespaces(kind: str, namespaces: set[str]) -> list[int]:
    """Every process whose `kind` namespace is one of `namespaces` (a /proc scan)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and namespace_inode(int(entry.name), kind) in namespaces:
            found.append(int(entry.name))
    return found


def run(*argv: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise RehearsalError(f"{' '.join(argv)} failed: {result.stderr.strip()}")


@dataclass
class PodNetwork:
    """A network namespace held by a `sleep` process, with a bridge that every pod's veth joins. The
    operator-side calls (dashboard, auth checks, the Kubernetes API stand-in) run on threads that
    entered it. When the holder dies the namespace, the bridge and every veth go with it."""
    deadline_s: float
    holder: subprocess.Popen | None = None
    _executor: ThreadPoolExecutor | None = None

    def start(self) -> None:
        self.holder = subprocess.Popen(["unshare", "--net", "--", "sleep", str(int(self.deadline_s))],
                                       start_new_session=True)
        deadline = time.monotonic() + 10
        host_ns = namespace_inode(os.getpid(), "net")
        while namespace_inode(self.holder.pid, "net") in (None, host_ns):
            if time.monotonic() > deadline or self.holder.poll() is not None:
                raise RehearsalError("the pod network namespace (unshare --net) did not come up within 10 s")
            time.sleep(0.02)
        self.inside("ip", "link", "set", "lo", "up")
        self.inside("ip", "link", "add", BRIDGE, "type", "bridge")
        self.inside("ip", "addr", "add", f"{POD_SUBNET}.1/24", "dev", BRIDGE)
        self.inside("ip", "link", "set", BRIDGE, "up")
        self._executor = ThreadPoolExecutor(max_workers=8, initializer=self._enter)

    @property
    def gateway(self) -> str:
        return f"{POD_SUBNET}.1"

    def inside(self, *argv: str) -> None:
        run("nsenter", "-t", str(self.holder.pid), "-n", *argv)

    def _enter(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/proc/{self.holder.pid}/ns/net", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns into the pod network")
        finally:
            os.close(fd)

    def call(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """Runs fn on a thread inside the pod network (its sockets are created there)."""
        return self._executor.submit(fn, *args, **kwargs).result()

    def attach(self, pid: int, ip: str) -> None:
        """A veth from the bridge into the network namespace of `pid`, with the pod's IP."""
        outer = f"veth{ip.rsplit('.', 1)[1]}"
        self.inside("ip", "link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", str(pid))
        self.inside("ip", "link", "set", outer, "master", BRIDGE, "up")
        run("nsenter", "-t", str(pid), "-n", "sh", "-c",
            f"ip addr add {ip}/24 dev eth0 && ip link set eth0 up && ip link set lo up && ip route add default via {self.gateway}")
        return ip

    def stop(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self.holder is not None and self.holder.poll() is None:
            os.killpg(self.holder.pid, signal.SIGKILL)
            self.holder.wait(10)


@dataclass
class Sandbox:
    """One container: a bubblewrap process whose child is PID 1 of the container's PID namespace."""
    name: str
    log_path: Path
    process: subprocess.Popen | None = None
    child_pid: int | None = None
    ip: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    uid: int | None = None
    gid: int | None = None
    workdir: str = "/"

    @property
    def pid_namespace(self) -> str | None:
        return namespace_inode(self.child_pid, "pid") if self.child_pid else None

    def start(self, argv_for: Callable[[int, int], list[str]], network: PodNetwork, ip: str) -> None:
        info_r, info_w = os.pipe()
        block_r, block_w = os.pipe()
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(argv_for(info_w, block_r), pass_fds=(info_w, block_r), stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()
            os.close(info_w)
            os.close(block_r)
        try:
            self.child_pid = _read_child_pid(info_r)
            if self.child_pid is None:
                raise RehearsalError(f"{self.name}: bubblewrap exited before the sandbox existed:\n{self.log_tail()}")
            network.attach(self.child_pid, ip)
            self.ip = ip
            os.write(block_w, b"1")
        finally:
            os.close(block_w)

    def exec(self, command: tuple[str, ...], timeout_s: float) -> subprocess.CompletedProcess:
        """Runs `command` inside the running container (all its namespaces, its user, its env), the way
        the kubelet runs an exec probe."""
        argv = ["nsenter", "-t", str(self.child_pid), "--user", "--mount", "--net", "--pid", "--uts", "--ipc"]
        if self.uid is not None:
            argv += ["-S", str(self.uid), "-G", str(self.gid if self.gid is not None else self.uid)]
        argv += ["env", "-i", f"--chdir={self.workdir}", *[f"{k}={v}" for k, v in self.env.items()], *command]
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, start_new_session=True)
        except subprocess.TimeoutExpired as error:
            return subprocess.CompletedProcess(argv, -1, error.stdout or "", f"timed out after {timeout_s} s")

    def find_child(self) -> None:
        """When bubblewrap failed before it reported its child, find the child by its parent."""
        if self.child_pid is None and self.process is not None:
            self.child_pid = next(iter(children_of(self.process.pid)), None)

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace_s: float) -> None:
        """SIGTERM to every process of the container (as the kubelet stops PID 1, and Ray's children with
        it), then SIGKILL to bubblewrap, whose PID 1 takes the whole PID namespace down with it."""
        self.find_child()
        namespace = self.pid_namespace
        if namespace:
            for pid in pids_in_namespaces("pid", {namespace}):
                _signal(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while pids_in_namespaces("pid", {namespace}) and time.monotonic() < deadline:
                time.sleep(0.2)
        if self.process is not None and self.process.poll() is None:
            _signal(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _read_child_pid(fd: int) -> int | None:
    """bubblewrap writes one JSON object (over several lines) to --info-fd once the namespaces exist."""
    text = ""
    with os.fdopen(fd) as info:
        for line in info:
            text += line
            if line.startswith("}"):
                return json.loads(text)["child-pid"]
    return None


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


@dataclass
class Processes:
    """Everything the rehearsal started, stopped in reverse order; `survivors` is the proof."""
    sandboxes: list[Sandbox] = field(default_factory=list)
    network: PodNetwork | None = None
    _namespaces: set[str] = field(default_factory=set)
    _pids: set[int] = field(default_factory=set)

    def add(self, sandbox: Sandbox) -> None:
        self.sandboxes.append(sandbox)

    def remember(self, sandbox: Sandbox) -> None:
        if sandbox.pid_namespace:
            self._namespaces.add(sandbox.pid_namespace)
        if sandbox.process is not None:
            self._pids.add(sandbox.process.pid)

    def stop_all(self, grace_s: float = 15.0) -> None:
        for sandbox in reversed(self.sandboxes):
            sandbox.find_child()
            self.remember(sandbox)
            sandbox.stop(grace_s)
        if self.network is not None:
            if self.network.holder is not None:
                self._pids.add(self.network.holder.pid)
            self.network.stop()

    def survivors(self, wait_s: float = 10.0) -> list[int]:
        """PIDs still alive in any of our sandboxes' PID namespaces, or any process we started directly."""
        deadline = time.monotonic() + wait_s
        while True:
            alive = pids_in_namespaces("pid", self._namespaces) + [p for p in self._pids if _alive(p)]
            if not alive or time.monotonic() > deadline:
                return sorted(set(alive))
            time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
