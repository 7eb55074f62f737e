"""The evaluation lifecycle: every way out of a run destroys the stack; template secrets stay secrets; a
timeout or Ctrl-C cancels the update and waits for its process to exit before destroying; a lock left
behind is cancelled; the CLI's version is checked. First with a recording double at the Workspace seam,
then with the real CliWorkspace driving a stand-in Pulumi CLI process (tests/fake_pulumi.py)."""

import json
import os
import signal
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from infra import pins
from infra.evaluation.lifecycle import (
    TTL_TAG,
    CliWorkspace,
    ConfigEntry,
    EvalOptions,
    EvalRefused,
    StackInfo,
    StackLocked,
    expired_stacks,
    reap,
    run_evaluation,
)
from infra.evaluation.pulumi_cli import PulumiCli

REPO_ROOT = Path(__file__).resolve().parent.parent
FAKE_CLI = Path(__file__).with_name("fake_pulumi.py")
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
API_KEY = "real-api-key-7f3a9c"  # what the user set with `pulumi config set --secret qwen2vl:apiKey`
PASSING = {"smokeReport": {"ok": True, "latency": {"ttft_p50_s": 0.4, "requests": 16}},
           "model": {"repo": pins.MODEL_REPO, "revision": pins.MODEL_REVISION}, "apiKey": "[secret]"}
FAST = {"destroy_backoff_seconds": 0}
# What the user sets once on the template stack so the reaper can destroy what eval creates (docs/cost.md).
DEPLOYER_ROLE = "arn:aws:iam::123456789012:role/qwen2vl-deployer"
GPU_POOL_URN = "urn:pulumi:eval-x::qwen2vl::qwen2vl:clusters:EksCluster$aws:eks/nodeGroup:NodeGroup::qwen2vl-gpu"
STATE_RESOURCES = [
    {"urn": "urn:pulumi:eval-x::qwen2vl::qwen2vl:clusters:EksCluster$aws:eks/cluster:Cluster::qwen2vl",
     "type": "aws:eks/cluster:Cluster"},
    {"urn": GPU_POOL_URN, "type": "aws:eks/nodeGroup:NodeGroup"},
    {"urn": "urn:pulumi:eval-x::qwen2vl::qwen2vl:clusters:EksCluster$aws:eks/nodeGroup:NodeGroup::qwen2vl-system",
     "type": "aws:eks/nodeGroup:NodeGroup"},
]


def template_stack() -> dict[str, ConfigEntry]:
    """The eval template stack as its backend holds it: Pulumi.eval.yaml plus the secret set on it."""
    config = yaml.safe_load((REPO_ROOT / "Pulumi.eval.yaml").read_text())["config"]
    entries = {key: ConfigEntry(str(value).lower() if isinstance(value, bool) else str(value), False)
               for key, value in config.items()}
    return {**entries, "qwen2vl:apiKey": ConfigEntry(API_KEY, True),
            "qwen2vl:awsRoleArn": ConfigEntry(DEPLOYER_ROLE, False)}


class RecordingWorkspace:
    """A backend in memory: stacks' config with secret flags, like the CLI's; records every call."""

    def __init__(self, up=None, destroy_failures=0, locked_destroys=0, stacks=()):
        self.calls = []
        self._up = up or (lambda ws: PASSING)
        self.destroy_failures, self.locked_destroys = destroy_failures, locked_destroys
        self.stacks = list(stacks)
        self.config = {"eval": template_stack()}
        self.tags = {}

    def cli_version(self):
        return "v3.272.0"

    def template_config(self, stack):
        # As `pulumi config --json` without --show-secrets: secret values are left out.
        return {k: ConfigEntry(None if e.secret else e.value, e.secret) for k, e in self.config[stack].items()}

    def create_stack(self, name, template, overrides, tags):
        self.calls.append(("create", name))
        self.config[name] = {**self.config[template], **{k: ConfigEntry(v, False) for k, v in overrides.items()}}
        self.tags[name] = tags

    def up(self, name, on_output):
        self.calls.append(("up", name))
        return self._up(self)

    def interrupt(self):
        self.calls.append(("interrupt", None))
        return True

    def destroy(self, name, on_output):
        self.calls.append(("destroy", name))
        if self.locked_destroys:
            self.locked_destroys -= 1
            raise StackLocked("the stack is currently locked by 1 lock(s)")
        if self.destroy_failures:
            self.destroy_failures -= 1
            raise RuntimeError("the cloud said no")

    def remove_gpu_pool(self, name, on_output):
        self.calls.append(("remove-gpu-pool", name))
        return GPU_POOL_URN

    def cancel(self, name):
        self.calls.append(("cancel", name))

    def remove_stack(self, name):
        self.calls.append(("remove", name))

    def list_stacks(self):
        return self.stacks

    def kinds(self):
        return [kind for kind, _ in self.calls]


def run(workspace, tmp_path, log=lambda *_: None, **options):
    return run_evaluation(workspace, EvalOptions(report_dir=tmp_path, **{**FAST, **options}), log=log,
                          now=lambda: NOW)


def raises(error):
    def up(_workspace):
        raise error
    return up


def test_passing_run_reports_and_destroys(tmp_path):
    ws = RecordingWorkspace()
    result = run(ws, tmp_path)
    assert result.ok and result.outcome == "passed" and result.destroyed
    assert ws.kinds() == ["create", "up", "destroy", "remove"]
    report = json.loads(result.report_path.read_text())
    assert report["cost"]["usd_per_hour"] == 4.6 and report["cost"]["ttl_usd"] == 18.4
    assert "| ttft_p50_s | 0.400 |" in result.report_path.with_suffix(".md").read_text()
    assert ws.tags[result.stack][TTL_TAG] == (NOW + timedelta(hours=4)).isoformat(timespec="seconds")
    assert result.stack.startswith("eval-20261126-120000-")


def test_template_secrets_reach_the_eval_stack_as_secrets(tmp_path):
    ws = RecordingWorkspace()
    result = run(ws, tmp_path, ttl_hours=3)
    copied = ws.config[result.stack]
    assert copied["qwen2vl:apiKey"] == ConfigEntry(API_KEY, True)
    assert copied["qwen2vl:ttlHours"] == ConfigEntry("3", False) and copied["qwen2vl:cloud"] == ConfigEntry("aws", False)
    assert API_KEY not in result.report_path.read_text()


@pytest.mark.parametrize("up, outcome", [
    (raises(RuntimeError("smoke Job failed")), "failed"),
    (lambda ws: {**PASSING, "smokeReport": {"ok": False}}, "failed"),
    (raises(KeyboardInterrupt()), "interrupted"),
])
def test_every_exit_path_destroys(tmp_path, up, outcome):
    ws = RecordingWorkspace(up=up)
    result = run(ws, tmp_path)
    assert result.outcome == outcome and not result.ok
    assert ws.kinds()[-2:] == ["destroy", "remove"] and result.destroyed
    assert json.loads(result.report_path.read_text())["outcome"] == outcome


def test_keep_keeps_a_passing_stack_only(tmp_path):
    kept = RecordingWorkspace()
    assert not run(kept, tmp_path, keep=True).destroyed and "destroy" not in kept.kinds()
    failing = RecordingWorkspace(up=lambda ws: {"smokeReport": {"ok": False}})
    assert run(failing, tmp_path, keep=True).destroyed


def test_destroy_is_retried_then_reported(tmp_path):
    once = RecordingWorkspace(destroy_failures=1)
    assert run(once, tmp_path).destroyed and once.kinds().count("destroy") == 2
    # After the failed destroy, the GPU pool goes first, and only once.
    assert once.kinds()[-4:] == ["destroy", "remove-gpu-pool", "destroy", "remove"]
    never = RecordingWorkspace(destroy_failures=5)
    assert not run(never, tmp_path, destroy_attempts=3).destroyed and never.kinds().count("destroy") == 3
    assert never.kinds().count("remove-gpu-pool") == 1


def test_a_locked_stack_is_cancelled_before_the_next_destroy(tmp_path):
    ws = RecordingWorkspace(locked_destroys=1)
    assert run(ws, tmp_path).destroyed
    assert ws.kinds()[-4:] == ["destroy", "cancel", "destroy", "remove"]


def test_budget_refusal_creates_nothing(tmp_path):
    ws = RecordingWorkspace()
    with pytest.raises(EvalRefused, match="maxTotalUsd"):
        run(ws, tmp_path, ttl_hours=8)  # 8 h x $4.60/h = $36.80 > $25 in Pulumi.eval.yaml
    with pytest.raises(EvalRefused, match="maxHourlyUsd"):
        run(ws, tmp_path, gpu_type="L40S")  # $10.49/h > $6
    with pytest.raises(EvalRefused, match="tensorParallelSize"):
        run(ws, tmp_path, tensor_parallel_size=3)
    assert ws.calls == []


def test_reaper_finds_only_expired_eval_stacks():
    past, future = (NOW - timedelta(minutes=1)).isoformat(), (NOW + timedelta(hours=1)).isoformat()
    ws = RecordingWorkspace(stacks=[
        StackInfo("eval-old", {TTL_TAG: past}), StackInfo("eval-new", {TTL_TAG: future}),
        StackInfo("prod", {TTL_TAG: past}), StackInfo("eval-untagged", {}),
    ])
    assert [info.name for info, _ in expired_stacks(ws, NOW)] == ["eval-old"]
    assert reap(ws, NOW, dry_run=True, log=lambda *_: None) == ["eval-old"] and ws.calls == []
    reap(ws, NOW, dry_run=False, log=lambda *_: None)
    assert ws.calls == [("destroy", "eval-old"), ("remove", "eval-old")]


def test_eval_cli_with_the_double(tmp_path, capsys):
    import scripts.eval as eval_script

    code = eval_script.main(["--report-dir", str(tmp_path)], workspace_factory=RecordingWorkspace)
    assert code == 0 and "passed" in capsys.readouterr().out
    assert eval_script.main(["--ttl-hours", "48", "--report-dir", str(tmp_path)],
                            workspace_factory=RecordingWorkspace) == 2


# --- The real CliWorkspace against a stand-in CLI process -------------------------------------------------

@pytest.fixture
def backend(tmp_path):
    """A fake Pulumi backend holding the eval template stack, and the CliWorkspace that drives it."""
    state = tmp_path / "backend"
    (state / "locks").mkdir(parents=True)
    template = {key: {"value": e.value, "secret": e.secret} for key, e in template_stack().items()}
    (state / "stacks.json").write_text(json.dumps({"eval": {"config": template, "tags": {}, "outputs": {}}}))

    def workspace(up="pass", version="v3.272.0", destroy=None):
        (state / "script.json").write_text(json.dumps({"up": up, "outputs": PASSING, "version": version,
                                                       "destroy": destroy, "resources": STATE_RESOURCES}))
        return CliWorkspace(PulumiCli(command=(sys.executable, str(FAKE_CLI)), work_dir=tmp_path,
                                      env={"FAKE_PULUMI_STATE": str(state)}))

    def events():
        return [json.loads(line) for line in (state / "events.jsonl").read_text().splitlines()]

    workspace.events, workspace.state = events, state
    return workspace


def index(events, kind, command, nth=0):
    """Position of the nth `kind` event of an invocation whose argv starts with `command`."""
    found = [i for i, e in enumerate(events) if e["event"] == kind
             and [a for a in e["argv"] if a != "--non-interactive"][:len(command)] == command]
    assert len(found) > nth, f"no {kind} event #{nth} of `pulumi {' '.join(command)}` in {events}"
    return found[nth]


def test_cli_workspace_copies_secrets_as_secrets(backend, tmp_path):
    result = run(backend(), tmp_path / "reports")
    assert result.outcome == "passed" and result.destroyed
    events = backend.events()
    update = events[index(events, "update", ["up"])]
    assert update["config"]["qwen2vl:apiKey"] == {"value": API_KEY, "secret": True}
    assert update["tags"][TTL_TAG] == (NOW + timedelta(hours=4)).isoformat(timespec="seconds")
    assert not any(API_KEY in " ".join(e["argv"]) for e in events), "a secret went through a command line"
    assert json.loads(result.report_path.read_text())["outputs"]["apiKey"] == "[secret]"
    assert set(json.loads((backend.state / "stacks.json").read_text())) == {"eval"}  # the eval stack was removed


def assert_stopped_then_destroyed(events):
    signalled, exited = index(events, "signal", ["up"]), index(events, "exit", ["up"])
    destroy = index(events, "start", ["destroy"])
    assert signalled < exited < destroy, "destroy started before the cancelled update had exited"
    assert "--refresh" in events[destroy]["argv"]


def test_timeout_cancels_the_update_and_waits_for_it_before_destroying(backend, tmp_path):
    # 6 s: the stand-in takes its SIGINT handling at its first line; a real CLI signalled before it has set
    # up its handler just exits, holding nothing.
    result = run(backend(up="hold"), tmp_path / "reports", timeout_minutes=0.1)
    assert result.outcome == "timeout" and result.destroyed
    assert_stopped_then_destroyed(backend.events())
    assert not any((backend.state / "locks").iterdir())


@pytest.fixture
def terminal_ctrl_c():
    """Ctrl-C raises KeyboardInterrupt, as in a terminal. A process started with SIGINT ignored (a shell's
    background job, a CI runner) keeps ignoring it, and Python then installs no KeyboardInterrupt handler
    (the signal module's docs: only "if the parent process has not changed it"): the test's own Ctrl-C did
    nothing there, the held update ran out its deadline and the run ended 'failed'."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_cancels_the_update_and_waits_for_it_before_destroying(backend, tmp_path, terminal_ctrl_c):
    def press_ctrl_c_once_the_update_runs(line):
        if line.startswith("Updating ("):
            os.kill(os.getpid(), signal.SIGINT)  # what the terminal's Ctrl-C sends this process

    result = run(backend(up="hold"), tmp_path / "reports", log=press_ctrl_c_once_the_update_runs)
    assert result.outcome == "interrupted" and result.destroyed
    assert_stopped_then_destroyed(backend.events())


def test_a_lock_left_by_a_terminated_update_is_cancelled_then_destroyed(backend, tmp_path):
    # The update ignores the first SIGINT past the grace period, is terminated by the second and leaves its lock.
    result = run(backend(up="stuck"), tmp_path / "reports", timeout_minutes=0.1, stop_grace_minutes=0.02)
    assert result.outcome == "timeout" and result.destroyed
    events = backend.events()
    assert index(events, "signal", ["up"], nth=1) < index(events, "exit", ["up"]) < index(events, "start", ["destroy"])
    refused = index(events, "exit", ["destroy"])
    assert events[refused]["code"] == 255
    assert refused < index(events, "start", ["cancel"]) < index(events, "start", ["destroy"], nth=1)
    assert index(events, "start", ["stack", "rm"]) > index(events, "start", ["destroy"], nth=1)


@pytest.mark.parametrize("script", ["eval", "reap"])
def test_a_pulumi_cli_older_than_3_211_is_refused_in_one_line(backend, capsys, script):
    main = __import__(f"scripts.{script}", fromlist=["main"]).main
    argv = ["--report-dir", str(backend.state)] if script == "eval" else []
    assert main(argv, workspace_factory=lambda: backend(version="v3.210.0")) == 2
    out = capsys.readouterr().out.strip()
    assert out.count("\n") == 0 and "v3.210.0 is older than v3.211.0" in out and "#19882" in out
    assert [e["argv"] for e in backend.events() if e["event"] == "start"] == [["--non-interactive", "version"]]


def test_missing_pulumi_cli_is_one_line(tmp_path, capsys):
    import scripts.eval as eval_script
    import scripts.reap as reap_script

    missing = lambda: CliWorkspace(PulumiCli(command=(str(tmp_path / "no-such-pulumi"),), work_dir=tmp_path))  # noqa: E731
    for main in (eval_script.main, reap_script.main):
        assert main([], workspace_factory=missing) == 2
        out = capsys.readouterr().out.strip()
        assert out.count("\n") == 0 and "Pulumi CLI is not installed" in out and "get.pulumi.com" in out


def test_reaper_with_the_cli_finds_tagged_stacks(backend, tmp_path):
    ws = backend()
    stacks = json.loads((backend.state / "stacks.json").read_text())
    stacks["eval-20261126-000000-abc123"] = {"config": {}, "tags": {TTL_TAG: (NOW - timedelta(hours=1)).isoformat()},
                                             "outputs": {}}
    (backend.state / "stacks.json").write_text(json.dumps(stacks))
    assert reap(ws, NOW, dry_run=False, log=lambda *_: None) == ["eval-20261126-000000-abc123"]
    assert set(json.loads((backend.state / "stacks.json").read_text())) == {"eval"}


# --- Guardrails that hold outside the happy path ----------------------------------------------------------

def test_a_failed_destroy_removes_the_gpu_pool_on_its_own_before_retrying(backend, tmp_path):
    lines = []
    result = run(backend(destroy="fail-once"), tmp_path / "reports", log=lines.append)
    assert result.outcome == "passed" and result.destroyed
    events = backend.events()
    failed = index(events, "exit", ["destroy"])
    assert events[failed]["code"] == 255
    targeted = index(events, "start", ["destroy"], nth=1)
    assert failed < index(events, "start", ["stack", "export"]) < targeted < index(events, "start", ["destroy"], nth=2)
    argv = events[targeted]["argv"]
    assert argv[argv.index("--target") + 1] == GPU_POOL_URN and argv.count("--target") == 1
    assert any("scaling its GPU pool to zero" in line for line in lines)
    assert any("removed the GPU pool" in line and GPU_POOL_URN in line for line in lines)


def test_eval_runs_pulumi_up_with_the_policy_pack(backend, tmp_path):
    run(backend(), tmp_path / "reports")
    events = backend.events()
    argv = events[index(events, "start", ["up"])]["argv"]
    pack = Path(argv[argv.index("--policy-pack") + 1])
    assert pack == REPO_ROOT / "infra" / "policy" and (pack / "PulumiPolicy.yaml").is_file()


@pytest.mark.parametrize("change, named", [
    ({"qwen2vl:protect": ConfigEntry("true", False)}, "qwen2vl:protect"),
    ({"qwen2vl:awsRoleArn": None}, "qwen2vl:awsRoleArn"),
])
def test_an_eval_the_reaper_could_not_destroy_is_refused(tmp_path, change, named):
    ws = RecordingWorkspace()
    for key, entry in change.items():
        if entry is None:
            del ws.config["eval"][key]
        else:
            ws.config["eval"][key] = entry
    with pytest.raises(EvalRefused, match=named):
        run(ws, tmp_path)
    assert ws.calls == []


def test_admin_principals_are_enough_for_the_reaper(tmp_path):
    ws = RecordingWorkspace()
    del ws.config["eval"]["qwen2vl:awsRoleArn"]
    ws.config["eval"]["qwen2vl:adminPrincipals"] = ConfigEntry('["arn:aws:iam::123456789012:role/reaper"]', False)
    assert run(ws, tmp_path).destroyed


def test_eval_without_reaper_access_is_refused_by_the_cli_before_any_stack(backend, capsys):
    import scripts.eval as eval_script

    stacks = json.loads((backend.state / "stacks.json").read_text())
    del stacks["eval"]["config"]["qwen2vl:awsRoleArn"]
    (backend.state / "stacks.json").write_text(json.dumps(stacks))
    assert eval_script.main(["--report-dir", str(backend.state)], workspace_factory=backend) == 2
    assert "qwen2vl:awsRoleArn" in capsys.readouterr().out
    assert not [e for e in backend.events() if e["argv"][1:3] == ["stack", "init"]]


def test_ctrl_c_while_the_stack_is_created_lets_it_finish_then_destroys_without_an_update(tmp_path, terminal_ctrl_c):
    import threading

    told = threading.Event()

    class CtrlCDuringCreate(RecordingWorkspace):
        def create_stack(self, name, template, overrides, tags):
            os.kill(os.getpid(), signal.SIGINT)  # the terminal's Ctrl-C, while `stack init` runs
            assert told.wait(30), "the lifecycle never noticed the Ctrl-C"
            super().create_stack(name, template, overrides, tags)

    def log(line):
        if "is being created" in line:
            told.set()

    ws = CtrlCDuringCreate()
    result = run(ws, tmp_path, log=log)
    assert result.outcome == "interrupted" and result.destroyed
    assert ws.kinds() == ["create", "destroy", "remove"]  # created in full, never updated, then destroyed


def test_a_stack_that_was_never_created_is_not_destroyed_five_times(backend, tmp_path):
    from infra.evaluation.lifecycle import destroy_stack

    lines = []
    assert destroy_stack(backend(), "eval-20261126-120000-gone00", lines.append, attempts=5, backoff_seconds=0)
    assert [e for e in backend.events() if e["event"] == "start"][-1]["argv"][1] == "destroy"
    assert len([e for e in backend.events() if e["event"] == "start" and e["argv"][1] == "destroy"]) == 1
    assert any("nothing to destroy" in line for line in lines)


def test_the_documented_reaper_has_aws_credentials_and_cluster_access():
    """The reaper recipe in docs/cost.md gives the job AWS credentials and names the config that gives its
    principal access to the EKS cluster; scripts/eval.py refuses an AWS eval without that config."""
    recipe = (REPO_ROOT / "docs" / "cost.md").read_text().split("## The reaper", 1)[1].split("\n## ", 1)[0]
    assert "aws-actions/configure-aws-credentials" in recipe and "id-token: write" in recipe
    assert "qwen2vl:awsRoleArn" in recipe and "qwen2vl:adminPrincipals" in recipe
    assert "scripts/reap.py --yes" in recipe
