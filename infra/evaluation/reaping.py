"""What makes a stack reapable: the stack tag scripts/eval.py writes, and a notice for stacks that carry a
ttlHours but were not made by scripts/eval.py (a plain `pulumi up --stack eval` is never reaped: a Pulumi
program cannot set its own stack's tags, and the reaper reads only those)."""

from __future__ import annotations

from infra.config import PROJECT, StackConfig

TTL_TAG = f"{PROJECT}:ttl-expires-at"
OWNER_TAG = f"{PROJECT}:owner"
EVAL_PREFIX = "eval-"


def ttl_notice(cfg: StackConfig) -> str | None:
    """A warning for the plan and `pulumi up` when ttlHours promises a TTL that nothing will enforce."""
    if cfg.ttl_hours is None or cfg.stack.startswith(EVAL_PREFIX):
        return None
    return (f"Stack '{cfg.stack}' is never reaped after its {cfg.ttl_hours} h TTL: only stacks made by "
            f"`python scripts/eval.py` are. ttlHours bounds this stack's budget and tags its resources, but the "
            f"reaper (`python scripts/reap.py`) acts only on the stack tag {TTL_TAG}, which scripts/eval.py writes "
            f"and a Pulumi program cannot. Use scripts/eval.py for a bounded run, or run "
            f"`pulumi destroy --stack {cfg.stack}` yourself when done.")
