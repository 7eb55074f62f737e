"""The stack's preflight: the stack config turned into a preflight request, judged before any resource."""

from __future__ import annotations

import json
from pathlib import Path

from infra import pins
from infra.config import PROJECT, ConfigError, StackConfig
from infra.preflight import PreflightRequest, Verdict, run_preflight
from infra.preflight.engine import Fix
from infra.model_lock import LOCK_PATH, load_lock, lock_matches
from infra.catalog import CatalogError, catalog_model, instance_shape

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
        return catalog_model(cfg.model_repo).config_at(cfg.model_revision)
    except CatalogError:
        raise ConfigError("modelRepo", cfg.model_repo,
                          "not in the preflight catalog; also set modelConfigFile to the model's config.json",
                          cfg.stack, pins.MODEL_REPO) from None


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
    """The verdict for this stack; raises PreflightFailed when vLLM would not serve it."""
    verdict = run_preflight(preflight_request(cfg))
    if not verdict.ok:
        named = instance_shape(cfg.cloud, cfg.gpu_instance_type) if cfg.gpu_instance_type else None
        raise PreflightFailed(verdict, cfg.stack, instance_gpus=named.gpus if named else None)
    return verdict


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
    if cfg.require_model_lock and deploying:
        raise ModelLockRequired(f"{message} Stack {cfg.stack} sets {PROJECT}:requireModelLock, so pulumi up refuses "
                                "to run until then.")
    return None, message
