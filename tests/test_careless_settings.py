"""Careless stack settings are refused by name, with the fix, before any resource is registered."""

import os
import socket
import subprocess
import sys

import pytest

from infra import pins
from infra.offline.engine import StackFileError, run_plan
from infra.offline.report import summary
from tests.conftest import REPO_ROOT, lock_resolving, write_stack

EVAL_LIKE = {"qwen2vl:registry": "registry.example.com/ml"}


def refused(stack_dir, stack="eval"):
    """The plan's error, after asserting that nothing but the stack itself was registered."""
    result = run_plan(stack, stack_dir)
    assert not result.ok
    assert [r.type for r in result.resources] == ["pulumi:pulumi:Stack"]
    assert "Traceback" not in result.error
    return result.error


def test_stack_file_without_cloud_names_cloud(tmp_path):
    (tmp_path / "Pulumi.eval.yaml").write_text("config:\n  qwen2vl:gpuType: L4\n  qwen2vl:registry: r.example.com/ml\n")
    error = refused(tmp_path)
    assert error.startswith("Stack config qwen2vl:cloud = (not set) is not valid")
    assert "whatever cluster kubectl points at" in error and "pulumi config set qwen2vl:cloud" in error


def test_empty_stack_file_is_called_empty(tmp_path):
    (tmp_path / "Pulumi.eval.yaml").write_text("")
    with pytest.raises(StackFileError, match=r"Pulumi.eval.yaml is empty; .* qwen2vl:cloud"):
        run_plan("eval", tmp_path)


def test_stack_file_with_only_comments_under_config_names_cloud(tmp_path):
    (tmp_path / "Pulumi.eval.yaml").write_text("config:\n  # nothing yet\n")
    assert "stack eval has no qwen2vl config at all" in refused(tmp_path)


def test_duplicate_keys_are_refused_with_their_lines(tmp_path):
    (tmp_path / "Pulumi.eval.yaml").write_text(
        "config:\n  qwen2vl:cloud: existing\n  qwen2vl:gpuType: L4\n  qwen2vl:gpuType: A10G\n")
    with pytest.raises(StackFileError, match=r"key 'qwen2vl:gpuType' is set twice, on lines 3 and 4"):
        run_plan("eval", tmp_path)


def test_a_bare_key_and_its_namespaced_twin_are_duplicates(tmp_path):
    (tmp_path / "Pulumi.eval.yaml").write_text(
        "config:\n  qwen2vl:cloud: existing\n  maxModelLen: 4096\n  qwen2vl:maxModelLen: 8192\n")
    with pytest.raises(StackFileError, match="sets qwen2vl:maxModelLen twice"):
        run_plan("eval", tmp_path)


def test_key_in_another_namespace_is_refused(tmp_path):
    error = refused(write_stack(tmp_path, "eval", {**EVAL_LIKE, "qwen2-vl:maxModelLen": "4096"}))
    assert error.startswith("Stack config qwen2-vl:maxModelLen = '4096' is not valid")
    assert "did you mean qwen2vl:maxModelLen?" in error
    assert "pulumi config rm qwen2-vl:maxModelLen" in error


def test_unknown_namespace_and_key_is_refused(tmp_path):
    error = refused(write_stack(tmp_path, "eval", {**EVAL_LIKE, "myteam:replicas": "2"}))
    assert "myteam:replicas" in error and "not myteam:<key>" in error


def test_provider_settings_are_accepted(tmp_path):
    result = run_plan("eval", write_stack(tmp_path, "eval", {**EVAL_LIKE, "kubernetes:enableServerSideApply": "true"}))
    assert result.ok, result.error


def test_revision_the_catalog_does_not_know_is_refused(tmp_path):
    error = refused(write_stack(tmp_path, "eval", {**EVAL_LIKE, "qwen2vl:modelRevision": "deadbeef"}))
    assert error.startswith("Stack config qwen2vl:modelRevision = 'deadbeef' is not valid")
    assert f"revisions the catalog knows: 3eb1d44, {pins.MODEL_REVISION}" in error and "modelConfigFile" in error
    assert f"pulumi config set qwen2vl:modelRevision {pins.MODEL_REVISION} --stack eval" in error
    assert f"python scripts/lock_model.py --repo {pins.MODEL_REPO} --revision deadbeef" in error


def test_full_id_of_a_revision_known_by_its_short_id_is_accepted(tmp_path):
    full_id = pins.MODEL_REVISION + "0" * (40 - len(pins.MODEL_REVISION))
    assert run_plan("eval", write_stack(tmp_path, "eval", {**EVAL_LIKE, "qwen2vl:modelRevision": full_id})).ok


def test_a_revision_the_model_lock_resolves_is_verified(tmp_path, monkeypatch):
    lock_resolving(monkeypatch, pins.MODEL_REPO, "deadbeef" + "0" * 32)
    assert run_plan("eval", write_stack(tmp_path, "eval", {**EVAL_LIKE, "qwen2vl:modelRevision": "deadbeef"})).ok


def test_model_repo_changed_without_its_revision_is_refused(tmp_path):
    error = refused(write_stack(tmp_path, "eval", {**EVAL_LIKE, "qwen2vl:modelRepo": "Qwen/Qwen2-VL-7B-Instruct-AWQ"}))
    assert error.startswith("Stack config qwen2vl:modelRevision = (not set) is not valid")
    assert f"{pins.MODEL_REVISION} is a commit of {pins.MODEL_REPO}" in error


def test_model_volume_smaller_than_the_model_is_refused(tmp_path):
    error = refused(write_stack(tmp_path, "eval", {**EVAL_LIKE, "qwen2vl:modelCacheSize": "10Gi"}))
    assert error.startswith("Stack config qwen2vl:modelCacheSize = '10Gi' is not valid")
    assert "needs about 4" in error and "pulumi config set qwen2vl:modelCacheSize 60Gi" in error


def test_model_volume_is_not_checked_for_an_image_baked_model():
    from infra.preflight_gate import check_model_volume, preflight_request
    from tests.conftest import make_config

    cfg = make_config(modelStorage="image", modelCacheSize="1Gi")
    check_model_volume(cfg, preflight_request(cfg).model_config)


@pytest.mark.parametrize("stack, extra", [("prod", {}), ("serving", {"qwen2vl:protect": "true"})])
def test_spot_on_production_is_refused(tmp_path, stack, extra):
    error = refused(write_stack(tmp_path, stack, {**EVAL_LIKE, **extra, "qwen2vl:spot": "true"}), stack)
    assert error.startswith("Stack config qwen2vl:spot = True is not valid")
    assert "allowSpotInProduction" in error and f"pulumi config set qwen2vl:spot false --stack {stack}" in error


def test_spot_on_production_with_the_opt_in_plans(tmp_path):
    stack_dir = write_stack(tmp_path, "prod", {**EVAL_LIKE, "qwen2vl:spot": "true",
                                               "qwen2vl:allowSpotInProduction": "true"})
    assert run_plan("prod", stack_dir).ok


def test_prod_plan_shows_that_up_will_refuse(plan_of):
    verdicts = [v for v in summary(plan_of("prod")) if v.name == "up"]
    assert len(verdicts) == 1 and verdicts[0].ok is False
    assert verdicts[0].message.startswith("pulumi up will refuse: No resolved model lock")
    proc = subprocess.run([sys.executable, "scripts/plan.py", "--stack", "prod", "--quiet"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "pulumi up will refuse" in proc.stdout


def test_staging_plan_has_no_up_refusal(plan_of):
    assert not plan_of("staging").up_refusals


def test_lock_model_without_hub_access_says_so_in_one_line(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the script connects: refused
    proc = subprocess.run([sys.executable, "scripts/lock_model.py", "--out", str(tmp_path / "lock.json")],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{port}"})
    assert proc.returncode == 1
    output = (proc.stdout + proc.stderr).strip()
    assert "Traceback" not in output and len(output.splitlines()) == 1, output
    assert f"cannot reach the hub at http://127.0.0.1:{port}" in output and "HF_ENDPOINT" in output
