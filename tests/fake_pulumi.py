"""A stand-in for the Pulumi CLI, as a real process: the commands CliWorkspace runs, with a backend kept in a
directory ($FAKE_PULUMI_STATE): stacks with config (secret flags) and tags, a lock file per stack while an
update runs, and an event log (start, signal, exit of every invocation) the tests read.

Its `up` behaves as $FAKE_PULUMI_STATE/script.json says:
  "pass"  -- finish at once;
  "hold"  -- hold the stack's lock until SIGINT, then release it and exit like a cancelled update;
  "stuck" -- ignore the first SIGINT (operations in flight), exit on the second without releasing the lock,
             as the real CLI does when told to terminate.
Its `destroy` refuses while a lock exists, with the real CLI's message; with "destroy": "fail-once" in the
script its first whole-stack destroy fails as one with a stuck Kubernetes delete does; `destroy --target URN`
deletes only those resources of the state (`stack export`), which a passing `up` fills from the script's
"resources". Anything else exits 2.
"""

from __future__ import annotations

import signal

# SIGINT is taken only by sigtimedwait below, as the real CLI's handler takes it, never by Python's default.
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

STATE = Path(os.environ["FAKE_PULUMI_STATE"])
LOCK_MESSAGE = ("error: the stack is currently locked by 1 lock(s). Either wait for the other process(es) to end "
                "or delete the lock file with `pulumi cancel`.")
# How long a held update waits for its signal before giving up (so a broken test cannot leave it running).
HOLD_DEADLINE_SECONDS = 120


def event(kind: str, **fields) -> None:
    with open(STATE / "events.jsonl", "a") as log:
        log.write(json.dumps({"pid": os.getpid(), "event": kind, "argv": sys.argv[1:], **fields}) + "\n")


def load() -> dict:
    return json.loads((STATE / "stacks.json").read_text())


def save(stacks: dict) -> None:
    (STATE / "stacks.json").write_text(json.dumps(stacks))


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def lock_path(stack: str) -> Path:
    return STATE / "locks" / stack


def finish(code: int, message: str = "") -> None:
    if message:
        print(message, flush=True)
    event("exit", code=code)
    sys.exit(code)


def wait_for_sigint() -> bool:
    got = signal.sigtimedwait({signal.SIGINT}, HOLD_DEADLINE_SECONDS)
    if got:
        event("signal", signal="SIGINT")
    return got is not None


def up(stack: str) -> None:
    mode = json.loads((STATE / "script.json").read_text())["up"]
    stacks = load()
    event("update", config=stacks[stack]["config"], tags=stacks[stack]["tags"])
    if mode == "pass":
        script = json.loads((STATE / "script.json").read_text())
        stacks[stack]["outputs"] = script["outputs"]
        stacks[stack]["resources"] = script.get("resources", [])
        save(stacks)
        finish(0, f"Updating ({stack})\nResources: + 40 created")
    lock_path(stack).write_text(str(os.getpid()))
    print(f"Updating ({stack})", flush=True)
    if not wait_for_sigint():
        finish(3, "fake pulumi: never signalled")
    print("^C received; cancelling. If you would like to terminate immediately, press ^C again.", flush=True)
    if mode == "stuck":
        if not wait_for_sigint():
            finish(3, "fake pulumi: never signalled twice")
        finish(255, "^C received; terminating")
    lock_path(stack).unlink()
    finish(255, "error: update canceled")


def main(args: list[str]) -> None:
    event("start")
    args = [a for a in args if a != "--non-interactive"]
    stacks = load()
    stack = option(args, "--stack") if "--stack" in args else None
    match args[:2]:
        case ["version", *_]:
            finish(0, json.loads((STATE / "script.json").read_text()).get("version", "v3.272.0"))
        case ["config", "--json"]:
            if stack not in stacks:
                finish(255, f"error: no stack named '{stack}' found")
            config = stacks[stack]["config"]
            finish(0, json.dumps({k: {"secret": v["secret"]} if v["secret"] else v for k, v in config.items()}))
        case ["stack", "init"]:
            template = stacks[option(args, "--copy-config-from")]
            stacks[args[2]] = {"config": json.loads(json.dumps(template["config"])), "tags": {}, "outputs": {}}
            save(stacks)
            finish(0, f"Created stack '{args[2]}'")
        case ["config", "set"]:
            key, value = args[-2:]
            stacks[stack]["config"][key] = {"value": value, "secret": "--secret" in args}
            save(stacks)
            finish(0)
        case ["stack", "tag"] if args[2] == "set":
            key, value = args[-2:]
            stacks[stack]["tags"][key] = value
            save(stacks)
            finish(0)
        case ["stack", "tag"] if args[2] == "ls":
            finish(0, json.dumps(stacks[stack]["tags"]))
        case ["up", *_]:
            up(stack)
        case ["stack", "output"]:
            finish(0, json.dumps(stacks[stack]["outputs"]))
        case ["destroy", *_]:
            if stack not in stacks:
                finish(255, f"error: no stack named '{stack}' found")
            if lock_path(stack).exists():
                finish(255, LOCK_MESSAGE)
            resources = stacks[stack].get("resources", [])
            if "--target" in args:
                targets = {args[i + 1] for i, arg in enumerate(args) if arg == "--target"}
                stacks[stack]["resources"] = [r for r in resources if r["urn"] not in targets]
                save(stacks)
                finish(0, f"Resources: - {len(resources) - len(stacks[stack]['resources'])} deleted")
            script = json.loads((STATE / "script.json").read_text())
            if script.get("destroy") == "fail-once" and not stacks[stack].get("destroy_failed"):
                stacks[stack]["destroy_failed"] = True
                save(stacks)
                finish(255, "error: update failed: namespace qwen2vl: still terminating after 10m0s")
            stacks[stack]["outputs"], stacks[stack]["resources"] = {}, []
            save(stacks)
            finish(0, "Resources: - 40 deleted")
        case ["stack", "export"]:
            finish(0, json.dumps({"version": 3, "deployment": {"resources": stacks[stack].get("resources", [])}}))
        case ["cancel", *_]:
            lock_path(stack).unlink(missing_ok=True)
            finish(0, "The currently running update has been canceled!")
        case ["stack", "rm"]:
            del stacks[stack]
            save(stacks)
            finish(0, "Stack has been removed!")
        case ["stack", "ls"]:
            tag = option(args, "--tag")
            finish(0, json.dumps([{"name": name} for name, s in stacks.items() if tag in s["tags"]]))
    finish(2, f"fake pulumi: unsupported command {args}")


if __name__ == "__main__":
    main(sys.argv[1:])
