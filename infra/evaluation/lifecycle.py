"""Short, cost-bounded evaluations: create a uniquely named eval stack, bring it up (which waits for the
smoke Job), write the report, and destroy the stack on every way out: success, failure, timeout, Ctrl-C.
Plus the reaper for stacks past their TTL.

Everything that talks to Pulumi goes through the `Workspace` seam: `AutomationWorkspace` is the real
one (the Automation API, which drives the Pulumi CLI); the tests use a recording double.
"""

from __future__ import annotations

import json
import secrets as token_source
import signal
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Protocol

from infra import outputs as output_names
from infra.config import PROJECT, ConfigError, StackConfig, parse_stack_config
from infra.cost import BudgetExceeded, check_budget
from infra.offline.engine import REPO_ROOT, stack_config

TEMPLATE_STACK = "eval"
TTL_TAG = f"{PROJECT}:ttl-expires-at"
OWNER_TAG = f"{PROJECT}:owner"
EVAL_PREFIX = "eval-"


class EvalRefused(Exception):
    """The run would not be allowed (bad settings, over budget); nothing was created."""


class EvalTimeout(Exception):
    pass


@dataclass(frozen=True)
class StackInfo:
    name: str
    tags: dict[str, str]


class Workspace(Protocol):
    def create_stack(self, name: str, config: dict[str, tuple[str, bool]], tags: dict[str, str]) -> None: ...
    def up(self, name: str, on_output: Callable[[str], None]) -> dict: ...
    def destroy(self, name: str, on_output: Callable[[str], None]) -> None: ...
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


def template_config(options: EvalOptions) -> tuple[dict[str, str], StackConfig]:
    """The eval template's config with the run's overrides, validated (and budget-checked) as a stack."""
    config, _ = stack_config(TEMPLATE_STACK)
    overrides = {
        "modelRepo": options.model_repo,
        "modelRevision": options.model_revision,
        "gpuType": options.gpu_type,
        "tensorParallelSize": options.tensor_parallel_size,
        "ttlHours": options.ttl_hours,
    }
    for key, value in overrides.items():
        if value is not None:
            config[f"{PROJECT}:{key}"] = str(value)
    prefix = f"{PROJECT}:"
    raw = {k[len(prefix):]: v for k, v in config.items() if k.startswith(prefix)}
    try:
        cfg = parse_stack_config(raw, TEMPLATE_STACK)
    except ConfigError as error:
        raise EvalRefused(str(error)) from None
    if cfg.ttl_hours is None:
        raise EvalRefused(f"an evaluation needs a TTL: set {PROJECT}:ttlHours in Pulumi.eval.yaml or pass --ttl-hours")
    return config, cfg


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


def run_evaluation(workspace: Workspace, options: EvalOptions, log: Callable[[str], None] = print,
                   now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> EvalResult:
    config, cfg = template_config(options)
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
    previous_alarm = _arm_timeout(options.timeout_minutes)
    try:
        workspace.create_stack(name, {k: (v, False) for k, v in config.items()}, tags)
        outputs = workspace.up(name, log)
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
        _disarm_timeout(previous_alarm)
        finished = now()
        hours = (finished - started).total_seconds() / 3600
        result.cost = {"usd_per_hour": cost.max_usd_per_hour, "run_hours": round(hours, 3),
                       "run_usd": round(hours * (cost.max_usd_per_hour or 0), 2), "ttl_usd": cost.ttl_usd}
        keep = options.keep and result.outcome == "passed"
        if not keep:
            result.destroyed = _destroy(workspace, name, log)
        else:
            log(f"kept {name} until {tags[TTL_TAG]}; `python scripts/reap.py --yes` destroys it after that")
        result.report_path = _write_reports(options.report_dir, result, outputs, started, finished)
    return result


def _destroy(workspace: Workspace, name: str, log: Callable[[str], None]) -> bool:
    for attempt in range(2):
        try:
            workspace.destroy(name, log)
            workspace.remove_stack(name)
            log(f"destroyed {name}")
            return True
        except KeyboardInterrupt:
            log("interrupt ignored while destroying; still destroying (Ctrl-C again would leave GPUs running)")
        except Exception as error:  # noqa: BLE001 -- reported, and the reaper catches what remains
            log(f"destroying {name} failed (try {attempt + 1} of 2): {error}")
    log(f"COULD NOT DESTROY {name}: run `pulumi destroy --stack {name} --yes` (scripts/reap.py also finds it "
        "after its TTL)")
    return False


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


def _arm_timeout(minutes: float):
    def expire(signum, frame):
        raise EvalTimeout()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, minutes * 60)
    return previous


def _disarm_timeout(previous) -> None:
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def expired_stacks(workspace: Workspace, now: datetime) -> list[tuple[StackInfo, datetime]]:
    """Eval stacks whose TTL tag is in the past (stacks without a TTL tag are never reaped)."""
    expired = []
    for info in workspace.list_stacks():
        stamp = info.tags.get(TTL_TAG)
        if not info.name.startswith(EVAL_PREFIX) or not stamp:
            continue
        expires = datetime.fromisoformat(stamp)
        if expires <= now:
            expired.append((info, expires))
    return expired


def reap(workspace: Workspace, now: datetime, dry_run: bool = True,
         log: Callable[[str], None] = print) -> list[str]:
    names = []
    for info, expires in expired_stacks(workspace, now):
        names.append(info.name)
        if dry_run:
            log(f"would destroy {info.name} (expired {expires.isoformat(timespec='seconds')})")
        else:
            _destroy(workspace, info.name, log)
    if not names:
        log("no evaluation stack is past its TTL")
    return names


class AutomationWorkspace:
    """The real workspace: Pulumi's Automation API on this project (needs the Pulumi CLI and a login)."""

    def __init__(self, work_dir: Path = REPO_ROOT) -> None:
        from pulumi import automation as auto

        self.auto = auto
        self.work_dir = str(work_dir)
        self.workspace = auto.LocalWorkspace(work_dir=self.work_dir)

    def _stack(self, name: str):
        return self.auto.select_stack(stack_name=name, work_dir=self.work_dir)

    def create_stack(self, name: str, config: dict[str, tuple[str, bool]], tags: dict[str, str]) -> None:
        stack = self.auto.create_stack(stack_name=name, work_dir=self.work_dir)
        stack.set_all_config({k: self.auto.ConfigValue(value=v, secret=s) for k, (v, s) in config.items()})
        for key, value in tags.items():
            self.workspace.set_tag(name, key, value)

    def up(self, name: str, on_output: Callable[[str], None]) -> dict:
        result = self._stack(name).up(on_output=on_output)
        return {key: ("[secret]" if out.secret else out.value) for key, out in result.outputs.items()}

    def destroy(self, name: str, on_output: Callable[[str], None]) -> None:
        self._stack(name).destroy(on_output=on_output)

    def remove_stack(self, name: str) -> None:
        self.workspace.remove_stack(name)

    def list_stacks(self) -> list[StackInfo]:
        return [StackInfo(s.name, dict(self.workspace.list_tags(s.name))) for s in self.workspace.list_stacks()]
