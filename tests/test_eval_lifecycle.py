"""The evaluation lifecycle with the Automation API replaced by a recording double at its one seam:
every way out of a run destroys the stack; TTL, budget refusal and reaping."""

import json
import time
from datetime import datetime, timedelta, timezone

import pytest

from infra import pins

from infra.evaluation.lifecycle import (
    TTL_TAG,
    EvalOptions,
    EvalRefused,
    StackInfo,
    expired_stacks,
    reap,
    run_evaluation,
)

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
PASSING = {"smokeReport": {"ok": True, "latency": {"ttft_p50_s": 0.4, "requests": 16}},
           "model": {"repo": pins.MODEL_REPO, "revision": pins.MODEL_REVISION}, "apiKey": "[secret]"}


class RecordingWorkspace:
    def __init__(self, up=None, destroy_failures=0, stacks=()):
        self.calls = []
        self._up = up or (lambda: PASSING)
        self.destroy_failures = destroy_failures
        self.stacks = list(stacks)
        self.tags = {}

    def create_stack(self, name, config, tags):
        self.calls.append(("create", name))
        self.config, self.tags[name] = config, tags

    def up(self, name, on_output):
        self.calls.append(("up", name))
        return self._up()

    def destroy(self, name, on_output):
        self.calls.append(("destroy", name))
        if self.destroy_failures:
            self.destroy_failures -= 1
            raise RuntimeError("the cloud said no")

    def remove_stack(self, name):
        self.calls.append(("remove", name))

    def list_stacks(self):
        return self.stacks

    def kinds(self):
        return [kind for kind, _ in self.calls]


def run(workspace, tmp_path, **options):
    return run_evaluation(workspace, EvalOptions(report_dir=tmp_path, **options), log=lambda *_: None,
                          now=lambda: NOW)


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
    assert ws.config["qwen2vl:ttlHours"] == ("4", False)


@pytest.mark.parametrize("up, outcome", [
    (lambda: (_ for _ in ()).throw(RuntimeError("smoke Job failed")), "failed"),
    (lambda: {**PASSING, "smokeReport": {"ok": False}}, "failed"),
    (lambda: (_ for _ in ()).throw(KeyboardInterrupt()), "interrupted"),
    (lambda: time.sleep(5), "timeout"),
])
def test_every_exit_path_destroys(tmp_path, up, outcome):
    ws = RecordingWorkspace(up=up)
    result = run(ws, tmp_path, timeout_minutes=0.002)
    assert result.outcome == outcome and not result.ok
    assert ws.kinds()[-2:] == ["destroy", "remove"] and result.destroyed
    assert json.loads(result.report_path.read_text())["outcome"] == outcome


def test_keep_keeps_a_passing_stack_only(tmp_path):
    kept = RecordingWorkspace()
    assert not run(kept, tmp_path, keep=True).destroyed and "destroy" not in kept.kinds()
    failing = RecordingWorkspace(up=lambda: {"smokeReport": {"ok": False}})
    assert run(failing, tmp_path, keep=True).destroyed


def test_destroy_is_retried_then_reported(tmp_path):
    once = RecordingWorkspace(destroy_failures=1)
    assert run(once, tmp_path).destroyed and once.kinds().count("destroy") == 2
    never = RecordingWorkspace(destroy_failures=5)
    assert not run(never, tmp_path).destroyed


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


def test_missing_pulumi_cli_is_one_line(monkeypatch, capsys):
    import scripts.eval as eval_script
    import scripts.reap as reap_script

    monkeypatch.setattr(eval_script.shutil, "which", lambda name: None)
    assert eval_script.main([]) == 2
    out = capsys.readouterr().out.strip()
    assert out.count("\n") == 0 and "Pulumi CLI is not installed" in out and "get.pulumi.com" in out
    monkeypatch.setattr(reap_script.shutil, "which", lambda name: None)
    assert reap_script.main([]) == 2


def test_eval_cli_with_the_double(tmp_path, capsys):
    import scripts.eval as eval_script

    code = eval_script.main(["--report-dir", str(tmp_path)], workspace_factory=RecordingWorkspace)
    assert code == 0 and "passed" in capsys.readouterr().out
    assert eval_script.main(["--ttl-hours", "48", "--report-dir", str(tmp_path)],
                            workspace_factory=RecordingWorkspace) == 2
