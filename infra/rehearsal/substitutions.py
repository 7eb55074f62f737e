"""What a CPU machine must change in the stack to run it, and nothing else; every change is listed in
the report. Pure: a Stack in, a Stack and the list out.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Mapping, Sequence

import yaml

from infra.rehearsal.kuberay import add_resource_params
from infra.rehearsal.manifests import Container, RehearsalError, Stack

# The tiny model's context (tests/serving/tiny_model.py: max_position_embeddings 1024) and the CPU
# build's KV cache size in GiB (vLLM CPU reads VLLM_CPU_KVCACHE_SPACE instead of GPU memory).
TINY_MAX_MODEL_LEN = 512
CPU_KV_CACHE_GIB = "1"
# The smoke checks the CPU machine can judge: not image_chat (this machine's vLLM cannot load Qwen2-VL's
# image processor: shared/reference/local-vllm.md), not text_chat (it judges the answer to a sum, and the
# tiny model's random weights answer every prompt with newlines, its greedy repetition of the prompt's
# last token). The burst still sends streamed chat completions through the whole path.
CPU_CHECKS = "models,burst"
# vLLM's CPU build compiles the model with torch.compile at start (most of the start-up time on two
# cores); --enforce-eager turns that off (vllm-cpu 0.32.0 vllm/config/vllm.py:1691-1710).
CPU_EAGER_ARGS = ["--enforce-eager"]


@dataclass(frozen=True)
class Substitution:
    what: str
    manifest: str
    rehearsal: str
    why: str

    def as_dict(self) -> dict:
        return asdict(self)


def serve_config(stack: Stack) -> dict:
    try:
        return yaml.safe_load(stack.serve_config_v2)
    except yaml.YAMLError as error:
        raise RehearsalError(f"serveConfigV2 is not valid YAML: {error}") from error


def _no_gpus(container: Container, subs: list[Substitution]) -> Container:
    params = add_resource_params(dict(container.ray_start_params), container.resources)
    gpus = params.get("num-gpus", "0")
    if gpus == "0":
        return container
    subs.append(Substitution(f"{container.pod} rayStartParams num-gpus", gpus, "0",
                             "no GPU here; Ray would hand the replica CUDA devices that do not exist"))
    return replace(container, ray_start_params={**container.ray_start_params, "num-gpus": "0"})


def _serve_args(app: dict, model_path: str, subs: list[Substitution]) -> None:
    name = app.get("name", "?")
    args = app.setdefault("args", {})
    changes = {"model": (model_path, "a tiny Qwen2 chat model built locally (tests/serving/tiny_model.py); "
                                     "the hub is unreachable and the 72B model needs GPUs")}
    if "revision" in args:
        changes["revision"] = (None, "the local tiny model has no hub revision")
    if "quantization" in args:
        changes["quantization"] = (None, "the tiny model is not quantized; AWQ kernels are GPU-only")
    if int(args.get("tensor_parallel_size", 1)) != 1:
        changes["tensor_parallel_size"] = (1, "one CPU process; tensor parallelism needs one GPU per shard")
    if args.get("max_model_len") and int(args["max_model_len"]) > TINY_MAX_MODEL_LEN:
        changes["max_model_len"] = (TINY_MAX_MODEL_LEN, "the tiny model's context is 1024 tokens")
    if "extra_args" not in args:
        changes["extra_args"] = (CPU_EAGER_ARGS, "the device: the CPU build's torch.compile at start takes minutes "
                                                 "on two cores; the GPU build does not compile this way")
    for key, (value, why) in changes.items():
        subs.append(Substitution(f"serveConfigV2 {name} args.{key}", json.dumps(args.get(key)), json.dumps(value), why))
        if value is None:
            args.pop(key)
        else:
            args[key] = value
    for deployment in app.get("deployments", []):
        options = deployment.get("ray_actor_options", {})
        if options.get("num_gpus"):
            subs.append(Substitution(f"serveConfigV2 {name} {deployment.get('name')} ray_actor_options.num_gpus",
                                     json.dumps(options["num_gpus"]), "0", "no GPU here"))
            options["num_gpus"] = 0


def _job_checks(job: Container, subs: list[Substitution]) -> Container:
    command = list(job.command + job.args)
    if "--checks" in command:
        index = command.index("--checks") + 1
        before = command[index]
        command[index] = CPU_CHECKS
    else:
        before = "(all)"
        command += ["--checks", CPU_CHECKS]
    subs.append(Substitution("smoke Job --checks", before, CPU_CHECKS,
                             "image_chat: this machine's vLLM cannot load Qwen2-VL's image processor; text_chat: "
                             "the tiny model's random weights cannot answer the sum it asks"))
    return replace(job, command=tuple(command), args=())


def for_cpu(stack: Stack, model_path: str, versions: dict[str, tuple[str, str]],
            engine_env: Mapping[str, str] | None = None) -> tuple[Stack, dict, list[Substitution]]:
    """The stack as this machine runs it, the serve config to submit, and every substitution made.
    `versions`: package -> (the image's pinned version, the version that stands in for it here);
    `engine_env`: what the workers' environment needs for the Serve application to start the engine's
    stand-in (tests/serving/engine_standin.py) instead of the pinned vLLM."""
    subs = [Substitution(f"{package} version", pinned, local,
                         "the image's CUDA build does not run here; the serving venv's CPU build stands in")
            for package, (pinned, local) in sorted(versions.items())]
    config = serve_config(stack)
    for app in config.get("applications", []):
        _serve_args(app, model_path, subs)
    head = _no_gpus(stack.head, subs)
    workers = []
    for worker in stack.workers:
        replicas, minimum, maximum = worker.replicas
        if maximum < 1:
            continue
        if max(replicas, minimum) != 1:
            subs.append(Substitution(
                f"{worker.pod} replicas", f"replicas {replicas}, minReplicas {minimum}, maxReplicas {maximum}", "1 pod",
                "no operator or autoscaler here to add workers on demand: one pod per group is started up front"))
        worker = _no_gpus(worker, subs)
        for name, value in (("VLLM_CPU_KVCACHE_SPACE", CPU_KV_CACHE_GIB), ("HF_HUB_OFFLINE", "1")):
            subs.append(Substitution(f"{worker.pod} env {name}", "(unset)", value,
                                     "the device: vLLM's CPU build sizes its KV cache from this" if name.startswith("VLLM")
                                     else "the model: it is local and the hub is unreachable"))
            worker = worker.with_env(name, value)
        for name, value in (engine_env or {}).items():
            subs.append(Substitution(f"{worker.pod} env {name}", "(unset: python -m vllm.entrypoints.openai.api_server)",
                                     value, "the engine: vLLM's CPU build, from its own virtualenv, runs the command "
                                     "the application builds, once the pinned release's parser has accepted it"))
            worker = worker.with_env(name, value)
        workers.append(worker)
    if stack.autoscaling:
        subs.append(Substitution("the autoscaler sidecar", "ray kuberay-autoscaler beside the head", "not run",
                                 "it scales worker groups through the Kubernetes API and the operator, not here"))
    job = _job_checks(stack.job, subs) if stack.job else None
    return replace(stack, head=head, workers=tuple(workers), job=job), config, subs


def machine_substitutions(image_venv: str, host_venv: str, services: dict[str, str],
                          engine_paths: Sequence[str] = ()) -> list[Substitution]:
    """What the sandbox itself substitutes: the image's filesystem and the cluster's plumbing."""
    subs = [Substitution("the image's root filesystem", "CUDA base image + /opt/venv",
                         f"the host's /usr and /etc read-only + {host_venv} read-only (linked at {image_venv}): "
                         "images/vllm/requirements.lock without the engine and its GPU packages",
                         "no container engine here; the image's own files (COPY) are bound at their image paths; "
                         "scripts/image_env.py lists what is left out and why")]
    if engine_paths:
        subs.append(Substitution("the engine's files", "vLLM and torch in /opt/venv",
                                 f"read-only at their host paths: {', '.join(engine_paths)}",
                                 "vLLM's CPU build and its stand-in program, which the pods start as the engine"))
    for name, target in sorted(services.items()):
        subs.append(Substitution(f"service address {name}", "a ClusterIP through kube-proxy", target,
                                 "no kube-proxy here: a cluster DNS stand-in answers the Service name with a selected pod IP"))
    subs.append(Substitution("the Kubernetes API", "kube-apiserver", "a local stand-in that stores ConfigMaps",
                             "the smoke Job writes its report to a ConfigMap through the API"))
    return subs

