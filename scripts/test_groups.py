#!/usr/bin/env python3
"""`make test`: the suite as independent pytest runs side by side, then each run's output in turn and one
closing line with the totals.

    python scripts/test_groups.py [PYTEST_ARGS...]

The real-server groups spend much of their time waiting on servers they start (Ray, vLLM's CPU build,
the rehearsal's pods), so on a 2-core machine they overlap well with the rest of the suite, which runs as
two halves. They do not share ports or names: each group picks free ports, and the rehearsal runs in
network namespaces of its own. Exit status 0 when every group passed, 1 otherwise.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The tests without a server are CPU-bound and split in two by file: the offline plans of the cloud layer
# here, the remainder (new files included) in "the rest". By pytest's durations on an idle machine
# (2026-12-04), each half is about 160 s of test time.
PLAN_FILES = ("tests/test_cluster_layer.py", "tests/test_clusters.py", "tests/test_policy.py",
              "tests/test_careless_settings.py", "tests/test_plan.py", "tests/test_placement.py",
              "tests/test_shapes.py", "tests/test_capacity.py", "tests/test_monitoring_stack.py",
              "tests/test_ingress.py", "tests/test_cost_budget.py", "tests/test_existing_cluster.py")
# The real-server tests: the rehearsal, the Serve application on the image's Ray, and the rest of them.
REHEARSAL_FILE = "tests/test_rehearse.py"
SERVE_APP_FILE = "tests/test_serve_app.py"


def ignoring(files) -> list[str]:
    return [argument for path in files for argument in ("--ignore", path)]


# Each group: a name and its pytest selection. Together they are the whole suite, each test once.
GROUPS = (
    ("rehearsal", ["-m", "server", REHEARSAL_FILE]),
    ("serve app", ["-m", "server", SERVE_APP_FILE]),
    ("servers", ["-m", "server", *ignoring((REHEARSAL_FILE, SERVE_APP_FILE))]),
    ("plans", ["-m", "not server", *PLAN_FILES]),
    ("the rest", ["-m", "not server", *ignoring(PLAN_FILES)]),
)
COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)")


def totals(output: str) -> dict[str, int]:
    """The counts of pytest's closing line (the last line that names any)."""
    for line in reversed(output.splitlines()):
        found = COUNT.findall(line)
        if found and " in " in line:
            counts: dict[str, int] = {}
            for number, kind in found:
                kind = "errors" if kind.startswith("error") else kind
                counts[kind] = counts.get(kind, 0) + int(number)
            return counts
    return {}


def main(extra: list[str]) -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="test-groups-") as scratch:
        runs = []
        for index, (name, selection) in enumerate(GROUPS):
            log = open(Path(scratch) / f"{index}.log", "w+")
            process = subprocess.Popen([sys.executable, "-m", "pytest", *selection, *extra], cwd=ROOT,
                                       stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            runs.append((name, process, log))
        summed: dict[str, int] = {}
        failed_groups = []
        for name, process, log in runs:
            code = process.wait()
            log.seek(0)
            output = log.read()
            log.close()
            print(f"\n===== {name}: pytest {' '.join(process.args[3:])} (exit {code}) =====", flush=True)
            print(output, end="", flush=True)
            for kind, number in totals(output).items():
                summed[kind] = summed.get(kind, 0) + number
            if code != 0:
                failed_groups.append(name)
    minutes, seconds = divmod(round(time.monotonic() - started), 60)
    print(f"\ngroups failed: {', '.join(failed_groups) or 'none'}; wall time {minutes} min {seconds} s")
    failed = summed.get("failed", 0) + summed.get("errors", 0)
    line = f"total: {summed.get('passed', 0)} passed, {failed} failed"
    if summed.get("skipped"):
        line += f", {summed['skipped']} skipped"
    print(line)
    return 1 if failed_groups else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
