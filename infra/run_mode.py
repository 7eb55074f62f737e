"""Whether this run deploys (`pulumi up`) or only shows what it would do (preview, offline plan)."""

from __future__ import annotations

import os

import pulumi

# Set by the offline engine (infra/offline/engine.py): its mock monitor resolves outputs like an
# update does, but the run is a preview and must judge like one.
OFFLINE_PLAN_ENV = "QWEN2VL_OFFLINE_PLAN"


def deploying() -> bool:
    return not pulumi.runtime.is_dry_run() and os.environ.get(OFFLINE_PLAN_ENV) != "1"
