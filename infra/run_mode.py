"""Whether this run deploys (`pulumi up`) or only shows what it would do (preview, offline plan)."""

from __future__ import annotations

import os

import pulumi

# Set by the offline engine (infra/offline/engine.py): its mock monitor resolves outputs like an
# update does, but the run is a preview and must judge like one.
OFFLINE_PLAN_ENV = "QWEN2VL_OFFLINE_PLAN"


def deploying() -> bool:
    return not pulumi.runtime.is_dry_run() and os.environ.get(OFFLINE_PLAN_ENV) != "1"


# How the program words a warning about something `pulumi up` will refuse although a preview passes
# (the offline plan shows such warnings as a failed "up" line of its summary).
UP_REFUSES = "pulumi up will refuse: "
