"""The Pulumi CLI, driven as a process we can stop: the real `Workspace` of the evaluation lifecycle.

Every command runs non-interactively in its own process group, so the lifecycle decides when the CLI gets
a signal (a terminal's Ctrl-C reaches only our process), and it can wait for the CLI to exit before it
destroys. The Pulumi CLI treats the first SIGINT or SIGTERM as "cancel gracefully: let in-flight resource
operations finish, write the state, release the lock" and a second one as "terminate now"
(pkg/backend/cancellation_scope.go, pulumi v3.259.0, lines 64-118).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

# Stack tags on self-managed ("DIY": file, S3, GCS, Azure) backends exist from Pulumi CLI 3.211.0
# (pulumi/pulumi#19882, CHANGELOG 3.211.0 "Add stack tags support for DIY backends"); before it
# `pulumi stack tag set` fails there with "stack tags not supported in diy mode"
# (pkg/backend/diy/backend.go, v3.210.0, line 1434), and the reaper would find no TTL.
MIN_CLI_VERSION = (3, 211, 0)
INSTALL_HINT = "curl -fsSL https://get.pulumi.com | sh"
# The CLI's words for "another update holds this stack": the Pulumi Cloud answer and the DIY backend's lock
# message (pkg/backend/diy/lock.go, v3.259.0, line 87; the Automation API matches the same texts in
# sdk/python/lib/pulumi/automation/errors.py, lines 70-71).
LOCK_CONFLICT_TEXTS = ("[409] Conflict: Another update is currently in progress.", "the stack is currently locked by")


class CliError(Exception):
    def __init__(self, args: Sequence[str], code: int, output: str) -> None:
        last = output.strip().splitlines()[-1] if output.strip() else "(no output)"
        super().__init__(f"`pulumi {' '.join(args)}` exited {code}: {last}")
        self.code, self.output = code, output

    @property
    def lock_conflict(self) -> bool:
        return any(text in self.output for text in LOCK_CONFLICT_TEXTS)


def parse_version(text: str) -> tuple[int, int, int] | None:
    match = re.search(r"v?(\d+)\.(\d+)\.(\d+)", text)
    return tuple(int(part) for part in match.groups()) if match else None  # type: ignore[return-value]


def version_problem(text: str) -> str | None:
    """One line saying why this Pulumi CLI cannot run evaluations, or None when it can."""
    version = parse_version(text)
    wanted = ".".join(map(str, MIN_CLI_VERSION))
    if version is None:
        return f"Cannot read the Pulumi CLI version from {text.strip()!r}; evaluations need v{wanted} or newer."
    if version < MIN_CLI_VERSION:
        have = ".".join(map(str, version))
        return (f"Pulumi CLI v{have} is older than v{wanted}, which evaluations need (stack tags on self-managed "
                f"backends, pulumi/pulumi#19882); upgrade with `{INSTALL_HINT}`.")
    return None


@dataclass
class PulumiCli:
    """Runs `pulumi ARGS` in `work_dir`. `command` is the executable (a list, so tests can run a stand-in)."""

    command: Sequence[str] = ("pulumi",)
    work_dir: Path = Path(".")
    env: dict[str, str] | None = None

    def __post_init__(self) -> None:
        self._running: subprocess.Popen | None = None
        self._guard = threading.Lock()

    def run(self, args: Sequence[str], on_output: Callable[[str], None] | None = None) -> str:
        argv = [*self.command, "--non-interactive", *args]
        process = subprocess.Popen(argv, cwd=self.work_dir, env={**os.environ, **(self.env or {})},
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   text=True, start_new_session=True)
        with self._guard:
            self._running = process
        lines = []
        try:
            for line in process.stdout:
                lines.append(line)
                if on_output:
                    on_output(line.rstrip("\n"))
            code = process.wait()
        finally:
            with self._guard:
                self._running = None
        if code != 0:
            raise CliError(args, code, "".join(lines))
        return "".join(lines)

    def interrupt(self) -> bool:
        """SIGINT to the running command's process group (the CLI and its plugins); False when none runs."""
        with self._guard:
            process = self._running
        if process is None or process.poll() is not None:
            return False
        try:
            os.killpg(process.pid, signal.SIGINT)
        except ProcessLookupError:  # it exited between the check and the signal
            return False
        return True

    def json(self, args: Sequence[str]):
        return json.loads(self.run(args))
