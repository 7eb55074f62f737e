#!/usr/bin/env python3
"""`make test`: the suite as independent pytest runs side by side, then each run's output in turn and one
closing line with the totals.

    python scripts/test_groups.py [PYTEST_ARGS...]

The real-server groups spend most of their time waiting on servers they start (Ray, vLLM's CPU build,
the rehearsal's pods), so on a 2-core machine they overlap well with the rest of the suite. They do not
share ports or names: each group picks free ports, and the rehearsal runs in network namespaces of its
own. Exit status 0 when every group passed, 1 otherwise.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Each group: a name and its pytest selection. Together they are the whole suite, each test once.
GROUPS = (
    ("rehearsal", ["-m", "server", "tests/test_rehearse.py"]),
    ("servers", ["-m", "server", "--ignore", "tests/test_rehearse.py"]),
    ("the rest", ["-m", "not server"]),
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
