"""The stack's preflight: the stack config turned into a preflight request, judged before any resource."""

from __future__ import annotations

import json
import math
from pathlib import Path

from infra import pins
from infra.config import PROJECT, ConfigError, StackConfig
from infra.preflight import PreflightRequest, Verdict, run_preflight
from infra.preflight.engine import Fix
from infra.model_lock import LOCK_PATH, load_lock, lock_matches
from infra.run_mode import UP_REFUSES
from infra.placement import quantity
from infra.catalog import CatalogError, catalog_model, instance_shape
from infra.preflight.memory import GIB, weights_per_gpu_bytes
from infra.preflight.model import parse_model_config

REPO_ROOT = Path(__file__).resolve().parent.parent


# The preflight request's fields, as the stack config sets them.
FIELD_TO_KEY = {
    "tensor_parallel_size": "tensorParallelSize",
    "max_model_len": "maxModelLen",
    "max_num_seqs": "maxNumSeqs",
    "gpu_memory_utilization": "gpuMemoryUtilization",
    "quantization": "quantization",
    "dtype": "dtype",
    "gpu": "gpuType",
}


def stack_fix(fix: Fix, stack: str, instance_gpus: int | None = None) -> str:
    """A preflight fix in the stack's words: each change as the `pulumi config set` that makes it. On a stack that
    names its gpuInstanceType (with `instance_gpus` GPUs), another GPU, or a TP size that does not divide those
    GPUs, means dropping that key too: the pool then takes a shape that fits (infra/config.py)."""
    if not fix.changes:
        return fix.text

    def commands(field: str, value) -> str:
        command = f"`pulumi config set {PROJECT}:{FIELD_TO_KEY[field]} {value} --stack {stack}`"
        outgrown = instance_gpus is not None and (
            field == "gpu" or (field == "tensor_parallel_size" and instance_gpus % value))
        if outgrown:
            command = f"`pulumi config rm {PROJECT}:gpuInstanceType --stack {stack}` and {command}"
        return command

    return " or ".join(" and ".join(commands(field, value) for field, value in change.items())
                       for change in fix.changes)


class PreflightFailed(Exception):
    def __init__(self, verdict: Verdict, stack: str, instance_gpus: int | None = None) -> None:
        self.verdict = verdict
        head = verdict.summary().splitlines()[0]
        lines = [head] + [
            f"  - [{c.name}] {c.message}" + ("\n    fix: " + "; or ".join(stack_fix(f, stack, instance_gpus)
                                                                       for f in c.fixes)
                                             if c.fixes else "")
            for c in verdict.failures]
        super().__init__(f"Preflight failed for stack {stack}; no resource was created.\n" + "\n".join(lines))


def _model_config(cfg: StackConfig) -> dict:
    if cfg.model_config_file:
        path = REPO_ROOT / cfg.model_config_file
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError("modelConfigFile", cfg.model_config_file, f"cannot read a JSON config.json ({exc})",
                              cfg.stack, "models/my-model/config.json") from None
    try:
        model = catalog_model(cfg.model_repo)
    except CatalogError:
        raise ConfigError("modelRepo", cfg.model_repo,
                          "not in the preflight catalog; also set modelConfigFile to the model's config.json",
                          cfg.stack, pins.MODEL_REPO) from None
    if model.revision_facts(cfg.model_revision) is None and not lock_matches(load_lock(), cfg.model_repo,
                                                                              cfg.model_revision):
        # Judging an unknown revision on the catalog's newest config is how the 72B's first upload (29568)
        # would pass: its config.json must come from the catalog, the lock (lock_model.py checked it) or a file.
        known = [facts.revision[:7] for facts in model.revisions if facts.bad_reason is None]
        choices = f"revisions the catalog knows: {', '.join(known)}" if known else "the catalog knows no revision of it"
        raise ConfigError("modelRevision", cfg.model_revision,
                          f"{cfg.model_repo}@{cfg.model_revision} cannot be verified: it is not in the model catalog "
                          f"({choices}) and {LOCK_PATH.name} does not resolve it, so the preflight cannot know its "
                          "config.json; run `python scripts/lock_model.py --repo "
                          f"{cfg.model_repo} --revision {cfg.model_revision}` where the hub is reachable and commit "
                          f"the lock, or set {PROJECT}:modelConfigFile to that revision's config.json", cfg.stack,
                          pins.MODEL_REVISION if pins.MODEL_REVISION in known else (known or ["<commit>"])[-1])
    return model.config_at(cfg.model_revision)


def preflight_request(cfg: StackConfig) -> PreflightRequest:
    return PreflightRequest(
        model_config=_model_config(cfg),
        tensor_parallel_size=cfg.tensor_parallel_size,
        gpu=cfg.gpu_type,
        quantization=cfg.quantization,
        vllm_version=cfg.vllm_version,
        max_model_len=cfg.max_model_len,
        max_num_seqs=cfg.max_num_seqs,
        gpu_memory_utilization=cfg.gpu_memory_utilization,
        dtype=cfg.dtype,
        model_repo=cfg.model_repo,
        revision=cfg.model_revision,
    )


def check_stack(cfg: StackConfig) -> Verdict:
    """The verdict for this stack; raises PreflightFailed when vLLM would not serve it, ConfigError when
    its model volume cannot hold the model."""
    request = preflight_request(cfg)
    verdict = run_preflight(request)
    if not verdict.ok:
        named = instance_shape(cfg.cloud, cfg.gpu_instance_type) if cfg.gpu_instance_type else None
        raise PreflightFailed(verdict, cfg.stack, instance_gpus=named.gpus if named else None)
    check_model_volume(cfg, request.model_config)
    return verdict


def model_files_bytes(cfg: StackConfig, model_config: dict) -> tuple[float, str]:
    """(the size of the model's files, where the figure comes from): the lock's file sizes where it resolves
    this revision, else the weights the preflight's memory model counts for the whole checkpoint."""
    lock = load_lock()
    if lock_matches(lock, cfg.model_repo, cfg.model_revision):
        return float(sum(f["size"] for f in lock["files"])), f"the file sizes in {LOCK_PATH.name}"
    return weights_per_gpu_bytes(parse_model_config(model_config), 1), "the weights its config.json describes"


def check_model_volume(cfg: StackConfig, model_config: dict) -> None:
    """A model volume smaller than the model fails the download with 'No space left on device', after
    the GPU node has started; an image-baked model has no volume."""
    if cfg.bake_model:
        return
    needed, source = model_files_bytes(cfg, model_config)
    size = quantity.amount(quantity.MEMORY, cfg.model_cache_size)
    if size < needed:
        # The hub client writes each file as *.incomplete and renames it: the files alone, plus room to grow.
        suggestion = math.ceil(needed * 1.25 / GIB / 10) * 10
        raise ConfigError("modelCacheSize", cfg.model_cache_size,
                          f"{cfg.model_repo} needs about {needed / GIB:.1f} GiB ({source}), more than the volume "
                          "holds; the download would fail after the GPU node has started", cfg.stack,
                          f"{suggestion}Gi")


class ModelLockRequired(Exception):
    """A stack that requires a resolved model lock is being deployed without one."""


def model_lock(cfg: StackConfig, deploying: bool) -> tuple[dict | None, str | None]:
    """(the lock, if it resolves this stack's model revision; else a warning naming the fix).

    Raises ModelLockRequired when the stack sets requireModelLock and this run deploys."""
    lock = load_lock()
    if lock_matches(lock, cfg.model_repo, cfg.model_revision):
        return lock, None
    state = (f"is for {lock.get('repo')}@{lock.get('commit') or lock.get('revision')}, not resolved"
             if not lock.get("resolved") else f"resolves {lock.get('repo')}@{lock.get('commit')}")
    message = (
        f"No resolved model lock for {cfg.model_repo}@{cfg.model_revision} ({LOCK_PATH.name} {state}); the weights "
        f"are downloaded by revision without verification. Resolve it where the hub is reachable with "
        f"`python scripts/lock_model.py --repo {cfg.model_repo} --revision {cfg.model_revision}` and commit the lock."
    )
    if cfg.bake_model:
        raise ModelLockRequired(f"{message} Stack {cfg.stack} sets {PROJECT}:modelStorage image, and the image build "
                                "needs the lock to know which files to bake in.")
    if cfg.require_model_lock:
        refusal = f"Stack {cfg.stack} sets {PROJECT}:requireModelLock, so pulumi up refuses to run until then."
        if deploying:
            raise ModelLockRequired(f"{message} {refusal}")
        return None, f"{UP_REFUSES}{message} {refusal}"
    return None, message
