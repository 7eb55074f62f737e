"""The offline plan: all stacks plan, deterministically, with secrets masked and strict mocks."""

import json
import subprocess
import sys

import pytest

from infra import outputs, pins
from infra.offline.engine import run_plan
from infra.offline.mocks import StrictMocks, UnmockedCall
from infra.offline import report
from infra.offline.report import plan_document, summary
from tests.conftest import REPO_ROOT, STACKS, write_stack
import yaml


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_plans(plan_of, stack):
    result = plan_of(stack)
    assert result.ok, result.error
    types = {r.type for r in result.resources}
    assert "kubernetes:ray.io/v1:RayService" in types
    assert "qwen2vl:workload:ServingWorkload" in types
    assert result.outputs[outputs.PREFLIGHT]["ok"] is True


def test_plan_is_deterministic():
    first = plan_document(run_plan("staging"))
    second = plan_document(run_plan("staging"))
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)


def test_json_contract():
    proc = subprocess.run([sys.executable, "scripts/plan.py", "--stack", "eval", "--json"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert set(doc) >= {"resources", "outputs", "preflight"}
    for resource in doc["resources"]:
        assert {"type", "name", "parent", "inputs"} <= set(resource)
    assert doc["outputs"][outputs.API_KEY] == "[secret]"
    secrets = [r for r in doc["resources"] if r["type"] == "kubernetes:core/v1:Secret"]
    assert secrets and all(r["inputs"]["stringData"] == "[secret]" for r in secrets)
    assert doc["preflight"]["ok"] is True and doc["preflight"]["memory"]["kv_tokens"] > 0


def plan_screen(*args: str) -> list[str]:
    proc = subprocess.run([sys.executable, "scripts/plan.py", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr
    return [line.strip() for line in proc.stdout.splitlines()]


SUMMARY_ROWS = (["preflight", "PASS"], ["placement", "PASS"], ["cost", "note"], ["warning", "note"], ["plan", "PASS"])


def summary_rows(lines: list[str]) -> list[list[str]]:
    """The summary's rows (name and verdict), in order, one per kind (a stack may have several warnings); a
    row's message may wrap onto more lines."""
    rows = [line.split()[:2] for line in lines if line.split()[1:2] in (["PASS"], ["FAIL"], ["note"])]
    return [row for index, row in enumerate(rows) if index == 0 or row != rows[index - 1]]


def test_the_first_screen_says_what_passed_before_the_tree():
    lines = plan_screen("--stack", "prod")
    details_start = next(i for i, line in enumerate(lines) if line.startswith("Memory per GPU"))
    tree_starts = next(i for i, line in enumerate(lines) if line.startswith("pulumi:pulumi:Stack"))
    rows = summary_rows(lines[:details_start])
    # prod's one warning, its unresolved model lock, is something pulumi up refuses: a FAIL line of its own.
    prod_rows = [["preflight", "PASS"], ["placement", "PASS"], ["cost", "note"], ["up", "FAIL"], ["plan", "PASS"]]
    assert [row for row in rows if row in prod_rows] == prod_rows, rows
    assert details_start < tree_starts


def test_quiet_prints_only_the_summary():
    lines = plan_screen("--stack", "eval", "--quiet")
    assert [row for row in summary_rows(lines) if row in SUMMARY_ROWS] == list(SUMMARY_ROWS)
    assert not any("pulumi:pulumi:Stack" in line or "Memory per GPU" in line for line in lines)


def test_a_failing_plan_says_so_in_its_summary(tmp_path):
    write_stack(tmp_path, "eval", {"qwen2vl:modelRevision": "3eb1d44f25054b16ac89a34bae70ca3049fcf1d0",
                                   "qwen2vl:registry": "registry.example.com/ml"})
    verdicts = {v.name: v for v in summary(run_plan("eval", tmp_path))}
    assert verdicts["preflight"].ok is False and "min_thread_k = 128" in verdicts["preflight"].message
    assert verdicts["plan"].ok is False and "no resource was created" in verdicts["plan"].message


def test_a_new_check_joins_the_summary_with_one_line(plan_of, monkeypatch):
    """How another check (a twin of something else) adds its verdict: one function in SUMMARY_SECTIONS."""
    monkeypatch.setattr(report, "SUMMARY_SECTIONS",
                        [*report.SUMMARY_SECTIONS, lambda result: [report.Verdict("quota", False, "2 GPUs short")]])
    document = plan_document(plan_of("eval"))
    assert document["summary"][-1] == {"name": "quota", "ok": False, "message": "2 GPUs short"}
    assert [v["name"] for v in document["summary"]][0] == "preflight"


def test_canary_secret_never_appears(tmp_path):
    canary = "canary-7f3a9c1e-do-not-print"
    ciphertext = "v1:ciphertext-canary-8d2b"
    base = yaml.safe_load((REPO_ROOT / "Pulumi.eval.yaml").read_text())["config"]
    stack_dir = write_stack(tmp_path, "canary", {**base, "qwen2vl:hubToken": {"secure": ciphertext}})
    result = run_plan("canary", stack_dir, secret_values={"qwen2vl:apiKey": canary})
    assert result.ok, result.error
    document = json.dumps(plan_document(result))
    assert canary not in document and ciphertext not in document
    assert "offline-placeholder" not in document
    # The secret did reach the program: its Secret resources exist, masked.
    secret_names = {r.name for r in result.resources if r.type == "kubernetes:core/v1:Secret"}
    assert secret_names == {"secret-qwen2vl-api-key", "secret-qwen2vl-hub-token"}


def test_broken_stack_file_gives_one_paragraph(tmp_path):
    write_stack(tmp_path, "eval", {"qwen2vl:maxNumSeqs": "many"})
    result = run_plan("eval", tmp_path)
    assert not result.ok
    assert result.error.startswith("Stack config qwen2vl:maxNumSeqs = 'many' is not valid")
    assert "Traceback" not in result.error and "\n" not in result.error


def test_preflight_failure_stops_before_any_resource(tmp_path):
    write_stack(tmp_path, "eval", {"qwen2vl:modelRevision": "3eb1d44f25054b16ac89a34bae70ca3049fcf1d0",
                                   "qwen2vl:registry": "registry.example.com/ml"})
    result = run_plan("eval", tmp_path)
    assert not result.ok
    assert "min_thread_k = 128" in result.error and "29696" in result.error
    assert [r.type for r in result.resources] == ["pulumi:pulumi:Stack"]
    assert plan_document(result)["preflight"]["ok"] is False


def test_preflight_fixes_are_the_settings_the_user_changes(tmp_path):
    write_stack(tmp_path, "eval", {"qwen2vl:maxModelLen": "40000", "qwen2vl:gpuType": "A100-80GB",
                                   "qwen2vl:registry": "registry.example.com/ml"})
    result = run_plan("eval", tmp_path)
    assert not result.ok
    assert "`pulumi config set qwen2vl:maxModelLen 32768 --stack eval`" in result.error
    assert "--max-model-len" not in result.error


def test_a_gpu_fix_on_a_stack_that_names_its_instance_drops_the_instance(tmp_path):
    write_stack(tmp_path, "eval", {"qwen2vl:cloud": "aws", "qwen2vl:region": "us-east-1",
                                   "qwen2vl:gpuInstanceType": "g6.xlarge", "qwen2vl:tensorParallelSize": "1"})
    result = run_plan("eval", tmp_path)
    assert not result.ok and "CUDA out of memory while loading weights" in result.error
    assert "`pulumi config rm qwen2vl:gpuInstanceType --stack eval` and `pulumi config set qwen2vl:gpuType" in result.error
    # TP 4 outgrows the named 1-GPU instance as well.
    assert ("`pulumi config rm qwen2vl:gpuInstanceType --stack eval` and `pulumi config set qwen2vl:tensorParallelSize 4"
            in result.error)


def test_strict_mocks_reject_unknown_calls():
    mocks = StrictMocks()
    with pytest.raises(UnmockedCall, match="aws:ec2/getAmi:getAmi"):
        mocks.call(type("Args", (), {"token": "aws:ec2/getAmi:getAmi", "args": {}, "provider": ""})())
    with pytest.raises(UnmockedCall, match="aws:rds/instance:Instance"):
        mocks.new_resource(type("Args", (), {"typ": "aws:rds/instance:Instance", "name": "c", "inputs": {},
                                             "custom": True})())


def test_prod_protects_state_and_eval_does_not(plan_of):
    protected = {r.name for r in plan_of("prod").resources if r.protect}
    # prod keeps its model copy per worker pod (modelStorage ephemeral), so its state is the namespace.
    assert "namespace-qwen2vl" in protected
    assert not any(r.protect for r in plan_of("eval").resources)


def test_workload_waits_for_the_operator(plan_of):
    resources = {r.name: r for r in plan_of("eval").resources}
    assert "kubernetes:helm.sh/v3:Release::kuberay-operator" in resources["namespace-qwen2vl"].depends_on
    job = next(r for r in resources.values() if r.type == "kubernetes:batch/v1:Job")
    assert "kubernetes:ray.io/v1:RayService::rayservice-qwen2vl" in job.depends_on


def test_every_resource_has_a_component_or_is_top_level(plan_of):
    for r in plan_of("staging").resources:
        if r.type.startswith("kubernetes:"):
            assert r.parent and r.parent.startswith("qwen2vl:"), r.name


def test_unresolved_lock_is_a_warning_in_the_plan(plan_of):
    warnings = " ".join(plan_of("prod").warnings)
    assert "No resolved model lock" in warnings
    assert f"python scripts/lock_model.py --repo {pins.MODEL_REPO}" in warnings


def test_prod_up_refuses_without_a_resolved_lock(monkeypatch):
    import infra.run_mode

    monkeypatch.setattr(infra.run_mode, "deploying", lambda: True)  # what `pulumi up` would report
    result = run_plan("prod")
    assert not result.ok and "requireModelLock, so pulumi up refuses to run" in result.error
    assert [r.type for r in result.resources] == ["pulumi:pulumi:Stack"]
    assert run_plan("staging").ok  # staging does not require the lock
