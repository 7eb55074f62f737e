"""Whether this run deploys (`pulumi up`) or only shows what it would do (preview, offline plan)."""

from __future__ import annotations

import os

import pulumi

# Set by the offline engine (infra/offline/engine.py): its mock monitor resolves outputs like an
# update does, but the run is a preview and must judge like one.
OFFLINE_PLAN_ENV = "QWEN2VL_OFFLINE_PLAN"


def offline_plan() -> bool:
    """The run is scripts/plan.py's: no cluster or cloud can be asked."""
    return os.environ.get(OFFLINE_PLAN_ENV) == "1"


def deploying() -> bool:
    return not pulumi.runtime.is_dry_run() and not offline_plan()


# How the program words a warning about something `pulumi up` will refuse although a preview passes
# (the offline plan shows such warnings as a failed "up" line of its summary).
UP_REFUSES = "pulumi up will refuse: "
