"""Short, cost-bounded evaluations: create a uniquely named eval stack, bring it up (which waits for the
smoke Job), write the report, and destroy the stack on every way out: success, failure, timeout, Ctrl-C.
Plus the reaper for stacks past their TTL.

Everything that talks to Pulumi goes through the `Workspace` seam: `CliWorkspace` is the real one (the
Pulumi CLI, run as processes we can interrupt and wait for: infra/evaluation/pulumi_cli.py); the tests
use a recording double and, for the stop-then-destroy path, a stand-in CLI process.

The new stack's config is the template stack's, copied by the CLI (`pulumi stack init --copy-config-from`,
which decrypts the template's secure values and encrypts them again for the new stack:
pkg/cmd/pulumi/stack/io.go CopyEntireConfigMap, pulumi v3.211.0, lines 431-475), so secrets never pass
through this process and stay secrets in the new stack.
"""

from __future__ import annotations

import json
import secrets as token_source
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Protocol

from infra import outputs as output_names
from infra.config import PROJECT, SECRET_KEYS, ConfigError, StackConfig, parse_stack_config
from infra.cost import BudgetExceeded, check_budget
from infra.evaluation.pulumi_cli import INSTALL_HINT, CliError, PulumiCli, version_problem
from infra.evaluation.reaping import EVAL_PREFIX, OWNER_TAG, TTL_TAG
from infra.nodepool import POOL_NAME

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_STACK = "eval"
POLICY_PACK = REPO_ROOT / "infra" / "policy"
# The GPU pool's resource in the stack's state, by cloud (infra/clusters/aws.py and gcp.py name it so).
GPU_POOL_TYPES = ("aws:eks/nodeGroup:NodeGroup", "gcp:container/nodePool:NodePool")
GPU_POOL_RESOURCE_NAME = f"qwen2vl-{POOL_NAME}"
PULUMI_MISSING = (f"The Pulumi CLI is not installed: install it with `{INSTALL_HINT}` "
                  "(see https://www.pulumi.com/docs/install/), then `pulumi login`.")
# After a second signal the CLI exits at once; this only bounds the wait for the process to be gone.
TERMINATE_WAIT_SECONDS = 60.0
# Longer than any destroy of this stack should take (GKE/EKS cluster deletion is ~10-15 min).
DESTROY_DEADLINE_MINUTES = 60
Log = Callable[[str], None]


class EvalRefused(Exception):
    """The run would not be allowed (bad settings, over budget, no usable CLI); nothing was created."""


class EvalTimeout(Exception):
    pass


class StackLocked(Exception):
    """Another update holds the stack's lock."""


class StackMissing(Exception):
    """The backend has no such stack (its creation failed or was never reached): nothing to destroy."""


@dataclass(frozen=True)
class StackInfo:
    name: str
    tags: dict[str, str]


@dataclass(frozen=True)
class ConfigEntry:
    value: str | None  # None for a secret: its value stays with Pulumi
    secret: bool


class Workspace(Protocol):
    def cli_version(self) -> str: ...
    def template_config(self, stack: str) -> dict[str, ConfigEntry]: ...
    def create_stack(self, name: str, template: str, overrides: dict[str, str], tags: dict[str, str]) -> None: ...
    def up(self, name: str, on_output: Log) -> dict: ...
    def interrupt(self) -> bool: ...
    def destroy(self, name: str, on_output: Log) -> None: ...
    def remove_gpu_pool(self, name: str, on_output: Log) -> str | None: ...
    def cancel(self, name: str) -> None: ...
    def remove_stack(self, name: str) -> None: ...
    def list_stacks(self) -> list[StackInfo]: ...


@dataclass(frozen=True)
class EvalOptions:
    model_repo: str | None = None
    model_revision: str | None = None
    gpu_type: str | None = None
    tensor_parallel_size: int | None = None
    ttl_hours: int | None = None
    timeout_minutes: float = 120.0
    # A cancelled update first finishes the resource operations in flight (a GPU node group takes ~10 min).
    stop_grace_minutes: float = 30.0
    destroy_attempts: int = 5
    destroy_backoff_seconds: float = 30.0
    keep: bool = False
    report_dir: Path = REPO_ROOT / "reports"


@dataclass
class EvalResult:
    stack: str
    ok: bool
    outcome: str  # "passed", "failed", "timeout", "interrupted"
    destroyed: bool
    report_path: Path | None
    cost: dict = field(default_factory=dict)
    error: str | None = None


def require_cli(workspace: Workspace) -> None:
    """Refuse, in one line, a machine without a Pulumi CLI recent enough for evaluations."""
    try:
        problem = version_problem(workspace.cli_version())
    except FileNotFoundError:
        problem = PULUMI_MISSING
    if problem:
        raise EvalRefused(problem)


def evaluation_config(template: dict[str, ConfigEntry], options: EvalOptions) -> tuple[dict[str, str], StackConfig]:
    """The run's overrides of the template's config, and the resulting stack config, validated as a stack.
    Secret values are not read: the settings that decide what is created and what it costs are plain."""
    overrides = {f"{PROJECT}:{key}": str(value) for key, value in {
        "modelRepo": options.model_repo,
        "modelRevision": options.model_revision,
        "gpuType": options.gpu_type,
        "tensorParallelSize": options.tensor_parallel_size,
        "ttlHours": options.ttl_hours,
    }.items() if value is not None}
    prefix = f"{PROJECT}:"
    plain = {key: entry.value for key, entry in template.items() if not entry.secret}
    raw = {key[len(prefix):]: value for key, value in {**plain, **overrides}.items()
           if key.startswith(prefix) and key[len(prefix):] not in SECRET_KEYS}
    try:
        cfg = parse_stack_config(raw, TEMPLATE_STACK)
    except ConfigError as error:
        raise EvalRefused(str(error)) from None
    if cfg.ttl_hours is None:
        raise EvalRefused(f"an evaluation needs a TTL: set {PROJECT}:ttlHours in Pulumi.eval.yaml or pass --ttl-hours")
    if cfg.protect:
        raise EvalRefused(f"{PROJECT}:protect is true on the template stack {TEMPLATE_STACK}: a protected evaluation "
                          "could be destroyed neither by scripts/eval.py nor by the reaper; "
                          f"`pulumi config set {PROJECT}:protect false --stack {TEMPLATE_STACK}`")
    if cfg.cloud == "aws" and not (cfg.aws_role_arn or cfg.admin_principals):
        # Only the principal that created an EKS cluster is its admin; the reaper, or anyone destroying a stack
        # whose own destroy failed, needs the same role or an access entry (infra/clusters/aws.py).
        raise EvalRefused(
            f"an AWS evaluation must be removable by the reaper: set {PROJECT}:awsRoleArn (a deployer role that "
            f"scripts/eval.py and scripts/reap.py both assume) or {PROJECT}:adminPrincipals (the reaper's role) on "
            f"the template stack, e.g. `pulumi config set {PROJECT}:awsRoleArn "
            f"arn:aws:iam::<account>:role/<deployer> --stack {TEMPLATE_STACK}` (docs/cost.md, \"The reaper\")")
    return overrides, cfg


def unique_stack_name(now: datetime) -> str:
    return f"{EVAL_PREFIX}{now.strftime('%Y%m%d-%H%M%S')}-{token_source.token_hex(3)}"


def markdown_summary(result: EvalResult, outputs: dict, started: datetime, finished: datetime) -> str:
    report = outputs.get(output_names.SMOKE_REPORT) or {}
    lines = [
        f"# Evaluation {result.stack}",
        "",
        f"- outcome: **{result.outcome}**" + (f" ({result.error})" if result.error else ""),
        f"- model: {outputs.get(output_names.MODEL, {}).get('repo')}@{outputs.get(output_names.MODEL, {}).get('revision')}",
        f"- started {started.isoformat(timespec='seconds')}, finished {finished.isoformat(timespec='seconds')}",
        f"- cost: about ${result.cost.get('run_usd', 0):.2f} for this run at ${result.cost.get('usd_per_hour') or 0:.2f}/h"
        f" (at most ${result.cost.get('ttl_usd') or 0:.2f} for its TTL)",
        f"- stack destroyed: {'yes' if result.destroyed else 'no (kept until its TTL: scripts/reap.py)'}",
    ]
    latency = report.get("latency") or {}
    if latency:
        lines += ["", "| metric | value |", "|---|---|"]
        lines += [f"| {key} | {value:.3f} |" if isinstance(value, float) else f"| {key} | {value} |"
                  for key, value in latency.items()]
    return "\n".join(lines) + "\n"


def run_evaluation(workspace: Workspace, options: EvalOptions, log: Log = print,
                   now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> EvalResult:
    overrides, cfg = evaluation_config(workspace.template_config(TEMPLATE_STACK), options)
    try:
        cost = check_budget(cfg)
    except BudgetExceeded as error:
        raise EvalRefused(str(error)) from None
    started = now()
    name = unique_stack_name(started)
    expires = started + timedelta(hours=cfg.ttl_hours)
    tags = {TTL_TAG: expires.isoformat(timespec="seconds"), OWNER_TAG: cfg.owner}
    result = EvalResult(stack=name, ok=False, outcome="failed", destroyed=False, report_path=None)
    outputs: dict = {}
    log(f"evaluation stack {name}: up to ${cost.max_usd_per_hour:.2f}/h, TTL {cfg.ttl_hours} h "
        f"(at most ${cost.ttl_usd:.2f}), expires {tags[TTL_TAG]}")
    try:
        create_stack(workspace, name, overrides, tags, log)
        outputs = run_update(workspace, name, options, log)
        smoke = outputs.get(output_names.SMOKE_REPORT) or {}
        result.ok = smoke.get("ok") is not False
        result.outcome = "passed" if result.ok else "failed"
    except EvalTimeout:
        result.outcome, result.error = "timeout", f"no result after {options.timeout_minutes:g} minutes"
    except KeyboardInterrupt:
        result.outcome, result.error = "interrupted", "interrupted (Ctrl-C)"
    except Exception as error:  # noqa: BLE001 -- any failure of the run still ends in destroy below
        result.outcome, result.error = "failed", f"{type(error).__name__}: {error}"
    finally:
        finished = now()
        hours = (finished - started).total_seconds() / 3600
        result.cost = {"usd_per_hour": cost.max_usd_per_hour, "run_hours": round(hours, 3),
                       "run_usd": round(hours * (cost.max_usd_per_hour or 0), 2), "ttl_usd": cost.ttl_usd}
        keep = options.keep and result.outcome == "passed"
        if not keep:
            result.destroyed = destroy_stack(workspace, name, log, options.destroy_attempts,
                                             options.destroy_backoff_seconds)
        else:
            log(f"kept {name} until {tags[TTL_TAG]}; `python scripts/reap.py --yes` destroys it after that")
        result.report_path = _write_reports(options.report_dir, result, outputs, started, finished)
    return result


class _Worker:
    """A blocking call in a thread, so the main thread stays free to notice a timeout or Ctrl-C."""

    def __init__(self, call: Callable[[], object], name: str) -> None:
        self._outcome: dict = {}
        self.name = name
        # An Event, not Thread.join: a join cut short by KeyboardInterrupt can leave the thread reported as
        # finished while it still runs (CPython gh-90882).
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(call,), name=name, daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], object]) -> None:
        try:
            self._outcome["value"] = call()
        except BaseException as error:  # noqa: BLE001 -- handed to the waiting thread by result()
            self._outcome["error"] = error
        finally:
            self._done.set()

    def wait(self, seconds: float | None) -> bool:
        """True when the call has returned (a Ctrl-C while waiting raises KeyboardInterrupt here)."""
        return self._done.wait(seconds)

    def wait_through_interrupts(self, seconds: float, log: Log, what: str) -> bool:
        deadline = time.monotonic() + seconds
        while True:
            try:
                return self.wait(max(0.0, deadline - time.monotonic()))
            except KeyboardInterrupt:
                log(f"Ctrl-C ignored: still waiting for {what} (stopping halfway would leave GPUs running)")

    def result(self):
        if not self._done.is_set():
            raise TimeoutError(f"{self.name} has not returned")
        if "error" in self._outcome:
            raise self._outcome["error"]
        return self._outcome["value"]


def create_stack(workspace: Workspace, name: str, overrides: dict[str, str], tags: dict[str, str], log: Log) -> None:
    """`stack init` and its config and tags, in a worker: a Ctrl-C meanwhile lets the creation finish (a stack
    half made is still destroyed) and then ends the run as interrupted, before any update."""
    # The creation starts only inside the loop, so a Ctrl-C at any point is caught by it.
    go = threading.Event()

    def create() -> None:
        go.wait()
        workspace.create_stack(name, TEMPLATE_STACK, overrides, tags)

    creation = _Worker(create, f"create {name}")
    interrupted = False
    while True:
        try:
            go.set()
            creation.wait(None)
            break
        except KeyboardInterrupt:
            interrupted = True
            log(f"Ctrl-C: {name} is being created; it is destroyed once that has finished, without an update")
    creation.result()
    if interrupted:
        raise KeyboardInterrupt


def run_update(workspace: Workspace, name: str, options: EvalOptions, log: Log) -> dict:
    """`pulumi up` with a deadline. On timeout or Ctrl-C the update is cancelled and waited for until its
    process has exited (so it no longer holds the stack's lock), then EvalTimeout/KeyboardInterrupt."""
    update = _Worker(lambda: workspace.up(name, log), f"pulumi up {name}")
    stop: BaseException
    try:
        if update.wait(options.timeout_minutes * 60):
            return update.result()
        stop = EvalTimeout()
    except KeyboardInterrupt as interrupt:
        stop = interrupt
    what = f"`pulumi up` of {name} to exit"
    log(f"cancelling the update of {name} ({'timeout' if isinstance(stop, EvalTimeout) else 'Ctrl-C'}); "
        "it finishes the resource operations in flight first")
    workspace.interrupt()
    if not update.wait_through_interrupts(options.stop_grace_minutes * 60, log, what):
        log(f"the update did not stop within {options.stop_grace_minutes:g} minutes; terminating it "
            "(operations in flight may be left pending; the destroy refreshes first)")
        workspace.interrupt()
        update.wait_through_interrupts(TERMINATE_WAIT_SECONDS, log, what)
    raise stop


def remove_gpu_pool_first(workspace: Workspace, name: str, log: Log) -> bool:
    """After a failed destroy, before anything else: remove the GPU pool on its own, so no GPU node bills while
    the rest is retried (whatever made the destroy fail, a stuck namespace or an expired token, is in the
    Kubernetes layer, which does not depend on the pool: infra/clusters/__init__.py ClusterHandle.ready)."""
    log(f"the destroy of {name} failed; scaling its GPU pool to zero first by removing the pool on its own")
    try:
        removed = workspace.remove_gpu_pool(name, log)
    except Exception as error:  # noqa: BLE001 -- reported; the next destroy tries the whole stack again
        log(f"removing the GPU pool of {name} failed: {error}")
        return False
    log(f"removed the GPU pool of {name} ({removed}): no GPU node bills any more" if removed
        else f"{name} has no GPU pool left")
    return True


def destroy_stack(workspace: Workspace, name: str, log: Log, attempts: int = 5, backoff_seconds: float = 30.0) -> bool:
    """Destroy (refreshing first, going on past single failures) and remove the stack, retrying with
    exponential backoff; a lock left by an update that is gone is cancelled before the next try, and after a
    failed destroy the GPU pool is removed on its own before the next try."""
    delay = backoff_seconds
    gpu_pool_gone = False
    for attempt in range(1, attempts + 1):
        destroy = _Worker(lambda: workspace.destroy(name, log), f"pulumi destroy {name}")
        if not destroy.wait_through_interrupts(DESTROY_DEADLINE_MINUTES * 60, log, f"the destroy of {name}"):
            log(f"the destroy of {name} still runs after {DESTROY_DEADLINE_MINUTES} minutes; cancelling it")
            workspace.interrupt()
            if not destroy.wait_through_interrupts(TERMINATE_WAIT_SECONDS, log, f"the destroy of {name} to exit"):
                log(f"COULD NOT DESTROY {name}: its destroy still runs; not starting another beside it")
                return False
        try:
            destroy.result()
            workspace.remove_stack(name)
            log(f"destroyed {name}")
            return True
        except StackMissing:
            log(f"{name} does not exist (its creation did not get that far): nothing to destroy")
            return True
        except StackLocked as error:
            log(f"{name} is locked by an update that no longer runs ({error}); cancelling it before the next try")
            try:
                workspace.cancel(name)
            except Exception as cancel_error:  # noqa: BLE001 -- reported; the next try reports the lock again
                log(f"cancelling the update of {name} failed: {cancel_error}")
        except Exception as error:  # noqa: BLE001 -- reported, and the reaper catches what remains
            log(f"destroying {name} failed (try {attempt} of {attempts}): {error}")
            gpu_pool_gone = gpu_pool_gone or remove_gpu_pool_first(workspace, name, log)
        if attempt < attempts:
            _pause(delay, log)
            delay *= 2
    log(f"COULD NOT DESTROY {name}: run `pulumi destroy --refresh --stack {name} --yes` (scripts/reap.py also "
        "finds it after its TTL)")
    return False


def _pause(seconds: float, log: Log) -> None:
    """Back off before the next destroy; Ctrl-C does not cut the retries short."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            time.sleep(left)
        except KeyboardInterrupt:
            log("Ctrl-C ignored: the stack is still to be destroyed")


def _write_reports(report_dir: Path, result: EvalResult, outputs: dict, started: datetime,
                   finished: datetime) -> Path:
    report_dir.mkdir(parents=True, exist_ok=True)
    path = report_dir / f"{result.stack}.json"
    document = {"stack": result.stack, "ok": result.ok, "outcome": result.outcome, "error": result.error,
                "destroyed": result.destroyed, "cost": result.cost, "started": started.isoformat(),
                "finished": finished.isoformat(), "outputs": outputs}
    path.write_text(json.dumps(document, indent=2, default=str))
    path.with_suffix(".md").write_text(markdown_summary(result, outputs, started, finished))
    return path


def expired_stacks(workspace: Workspace, now: datetime) -> list[tuple[StackInfo, datetime]]:
    """Eval stacks whose TTL tag is in the past (stacks without a TTL tag are never reaped)."""
    expired = []
    for info in workspace.list_stacks():
        stamp = info.tags.get(TTL_TAG)
        if not info.name.rsplit("/", 1)[-1].startswith(EVAL_PREFIX) or not stamp:
            continue
        expires = datetime.fromisoformat(stamp)
        if expires <= now:
            expired.append((info, expires))
    return expired


def reap(workspace: Workspace, now: datetime, dry_run: bool = True, log: Log = print) -> list[str]:
    names = []
    for info, expires in expired_stacks(workspace, now):
        names.append(info.name)
        if dry_run:
            log(f"would destroy {info.name} (expired {expires.isoformat(timespec='seconds')})")
        else:
            destroy_stack(workspace, info.name, log)
    if not names:
        log("no evaluation stack is past its TTL")
    return names


class CliWorkspace:
    """The real workspace: the Pulumi CLI on this project (needs a `pulumi login` and the eval template
    stack, `pulumi stack init eval`, with its secrets set by `pulumi config set --secret`)."""

    def __init__(self, cli: PulumiCli | None = None) -> None:
        self.cli = cli or PulumiCli(work_dir=REPO_ROOT)

    def cli_version(self) -> str:
        return self.cli.run(["version"]).strip()

    def template_config(self, stack: str) -> dict[str, ConfigEntry]:
        # Without --show-secrets the CLI leaves secret values out of its JSON (pkg/cmd/pulumi/config/config.go,
        # v3.259.0, lines 1229-1235).
        try:
            listed = self.cli.json(["config", "--json", "--stack", stack])
        except CliError as error:
            raise EvalRefused(f"cannot read the config of the template stack {stack} ({error}); create it once "
                              f"with `pulumi stack init {stack}` and set its secrets with "
                              f"`pulumi config set --secret {PROJECT}:apiKey --stack {stack}`") from None
        return {key: ConfigEntry(entry.get("value"), bool(entry.get("secret"))) for key, entry in listed.items()}

    def create_stack(self, name: str, template: str, overrides: dict[str, str], tags: dict[str, str]) -> None:
        self.cli.run(["stack", "init", name, "--copy-config-from", template, "--no-select"])
        for key, value in overrides.items():
            self.cli.run(["config", "set", "--plaintext", "--stack", name, key, value])
        for key, value in tags.items():
            self.cli.run(["stack", "tag", "set", "--stack", name, key, value])

    def up(self, name: str, on_output: Log) -> dict:
        # With the policy pack, as the guardrails for eval stacks (a TTL on the GPU pool) are meant to run
        # where eval stacks are made (docs/policy.md).
        self.cli.run(["up", "--yes", "--skip-preview", "--policy-pack", str(POLICY_PACK), "--stack", name],
                     on_output)
        # Without --show-secrets secret outputs read "[secret]" (display.MassageSecrets).
        return self.cli.json(["stack", "output", "--json", "--stack", name])

    def interrupt(self) -> bool:
        return self.cli.interrupt()

    def destroy(self, name: str, on_output: Log) -> None:
        try:
            self.cli.run(["destroy", "--yes", "--skip-preview", "--refresh", "--continue-on-error", "--stack", name],
                         on_output)
        except CliError as error:
            if error.lock_conflict:
                raise StackLocked(str(error)) from None
            if f"no stack named '{name}'" in error.output:
                raise StackMissing(str(error)) from None
            raise

    def remove_gpu_pool(self, name: str, on_output: Log) -> str | None:
        """`pulumi destroy --target` of the stack's GPU node group or pool, with the stack's own provider (its
        region, profile and role), so it needs no other cloud credentials than the destroy; None when the
        state holds no GPU pool."""
        state = self.cli.json(["stack", "export", "--stack", name])
        urns = [resource["urn"] for resource in state.get("deployment", {}).get("resources") or []
                if resource.get("type") in GPU_POOL_TYPES and resource["urn"].endswith(f"::{GPU_POOL_RESOURCE_NAME}")]
        if not urns:
            return None
        self.cli.run(["destroy", "--yes", "--skip-preview", "--stack", name,
                      *[arg for urn in urns for arg in ("--target", urn)]], on_output)
        return ", ".join(urns)

    def cancel(self, name: str) -> None:
        self.cli.run(["cancel", "--yes", "--stack", name])

    def remove_stack(self, name: str) -> None:
        self.cli.run(["stack", "rm", "--yes", "--stack", name])

    def list_stacks(self) -> list[StackInfo]:
        listed = self.cli.json(["stack", "ls", "--json", "--tag", TTL_TAG])
        return [StackInfo(entry["name"], self.cli.json(["stack", "tag", "ls", "--json", "--stack", entry["name"]]))
                for entry in listed]
