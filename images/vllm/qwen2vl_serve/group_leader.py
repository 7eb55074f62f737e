"""The leader of vLLM's process group: it starts vLLM and ends the whole group (the API server, its engine
process and the tensor-parallel workers) when vLLM exits, when it is told to stop, or when the replica
that started it is gone, however that replica ended.

    python -m qwen2vl_serve.group_leader --parent PID -- python -m vllm.entrypoints.openai.api_server ...

Why a process of our own leads the group:
- vLLM 0.6.3's API server starts its engine as a non-daemon multiprocessing child, and the engine starts
  the TP workers (vllm/entrypoints/openai/api_server.py:174-178); none of them watches the replica.
- Ray kills only a worker's *direct* children when the worker exits, and not at all when it crashed or
  was killed (https://docs.ray.io/en/latest/ray-core/user-spawn-processes.html,
  RAY_kill_child_processes_on_worker_exit: "This won't work if the worker crashed. This is NOT recursive").
  Serve force-kills a replica that has not stopped within graceful_shutdown_timeout_s.
- PR_SET_PDEATHSIG on vLLM's API server would end only that process, not its engine and workers, and it
  fires when the *thread* that forked the child exits (man 2 prctl: "the 'parent' in this case is
  considered to be the thread that created this process"), which in a Serve replica is not the replica's
  lifetime. So this leader watches its parent's pid instead, and ends every member of its group.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

WATCH_S = 1.0  # how often the leader looks whether its parent is gone
GRACE_S = 20.0  # SIGTERM first; SIGKILL for whatever is left after this


def group_members(pgid: int, exclude: int | None = None) -> list[int]:
    """Live (not zombie) processes in process group `pgid`, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == exclude:
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the command name (which may hold spaces and parentheses): state ppid pgrp ...
        state, _ppid, pgrp = stat[stat.rindex(")") + 2:].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            members.append(int(entry.name))
    return members


def signal_members(pgid: int, sig: int, exclude: int | None = None) -> None:
    for pid in group_members(pgid, exclude):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def wait_until_empty(pgid: int, seconds: float, exclude: int | None = None) -> bool:
    deadline = time.monotonic() + seconds
    while group_members(pgid, exclude):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def end_group(pgid: int, grace_s: float = GRACE_S, exclude: int | None = None) -> None:
    """SIGTERM every member of the group, then SIGKILL whatever is still there after `grace_s`."""
    signal_members(pgid, signal.SIGTERM, exclude)
    if not wait_until_empty(pgid, grace_s, exclude):
        signal_members(pgid, signal.SIGKILL, exclude)
        wait_until_empty(pgid, grace_s, exclude)


def lead(command: list[str], parent: int, grace_s: float = GRACE_S) -> int:
    """Runs `command` in our process group until it exits, we are told to stop, or `parent` is gone; then
    ends the group. Returns the command's exit code (or 128 + signal when we stopped it)."""
    stop_signal: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, _frame: stop_signal.append(number))
    me = os.getpid()
    pgid = os.getpgid(0)
    child = subprocess.Popen(command)
    code = None
    while code is None and not stop_signal and os.getppid() == parent:
        try:
            code = child.wait(WATCH_S)
        except subprocess.TimeoutExpired:
            pass
    end_group(pgid, grace_s, exclude=me)
    if code is None:
        code = child.wait()
        if stop_signal:
            return 128 + stop_signal[0]
    return code if code >= 0 else 128 - code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a command as a process group that ends with its parent.")
    parser.add_argument("--parent", type=int, required=True, help="end the group when this pid is gone")
    parser.add_argument("--grace", type=float, default=GRACE_S, help="seconds between SIGTERM and SIGKILL")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to run after --")
    if os.getppid() != args.parent:  # the parent died before we started
        return 1
    return lead(command, args.parent, args.grace)


if __name__ == "__main__":
    sys.exit(main())
