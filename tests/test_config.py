"""Stack config: every key validates, every bad value is a ConfigError naming its key, nothing else."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.config import KEYS, KEYS_BY_NAME, ConfigError, parse_stack_config
from infra.offline.engine import run_plan
from tests.conftest import make_config, write_stack

KEY_NAMES = [key.name for key in KEYS]


@settings(max_examples=400, deadline=None)
@given(key=st.sampled_from(KEY_NAMES), value=st.one_of(st.text(max_size=40), st.integers().map(str),
                                                       st.floats().map(str)))
def test_any_value_either_parses_or_names_its_key(key, value):
    try:
        parse_stack_config({"cloud": "existing", key: value}, "test")
    except ConfigError as error:
        assert error.key in (key, "region", "gcpProject", "registry", "gpuNodesMin", "maxModelLen", "gpuType",
                             "vllmVersion", "modelRevision")
        assert f"qwen2vl:{error.key}" in str(error)
        assert "pulumi config set" in str(error)


def _invalid_values(key):
    """Values each key's documented rule rejects, by the kind of value it takes."""
    allowed = key.allowed
    # No "+": an AWS CLI profile name may contain it (awsProfile).
    junk = st.text(alphabet="!#$%^&*()=<>?;|~` ", min_size=1, max_size=10)
    if allowed.startswith("an integer from"):
        low, high = (int(x) for x in allowed.removeprefix("an integer from ").split(" to "))
        return st.one_of(junk, st.integers(max_value=low - 1).map(str), st.integers(min_value=high + 1).map(str),
                         st.just("4.5"))
    if allowed in ("true or false",):
        return st.one_of(junk, st.sampled_from(["yes", "1", "on"]))
    if allowed.startswith("a JSON list"):
        return st.one_of(junk, st.just('"not-a-list"'), st.just("[1, 2]"), st.just('["!!"]'))
    if allowed.startswith("a number from"):
        return st.one_of(junk, st.sampled_from(["0", "1.5", "-0.2", "nan"]))
    if allowed.startswith("a positive number"):
        return st.one_of(junk, st.sampled_from(["0", "-3", "nan"]))
    return junk


@settings(max_examples=300, deadline=None)
@given(data=st.data(), key=st.sampled_from(KEY_NAMES))
def test_every_invalid_value_is_a_config_error_naming_the_key(data, key):
    value = data.draw(_invalid_values(KEYS_BY_NAME[key]))
    with pytest.raises(ConfigError) as info:
        parse_stack_config({key: value}, "eval")
    assert info.value.key == key
    assert f"qwen2vl:{key} = {value!r}" in str(info.value)
    assert "--stack eval" in str(info.value)


def test_defaults_are_valid_and_typed():
    cfg = parse_stack_config({"cloud": "existing", "registry": "registry.example.com/ml"}, "test")
    assert cfg.tensor_parallel_size == 4 and cfg.max_num_seqs == 16
    assert cfg.gpu_memory_utilization == pytest.approx(0.9)
    assert cfg.allowed_cidrs == () and cfg.cloud == "existing"


def test_zero_is_kept_not_replaced_by_the_default():
    assert make_config(gpuNodesMin=0, gpuNodesMax=3).gpu_nodes_min == 0


def test_unknown_key_suggests_the_right_one():
    with pytest.raises(ConfigError) as info:
        parse_stack_config({"gpuTyp": "L4"}, "eval")
    assert "did you mean gpuType" in str(info.value)
    assert "pulumi config rm qwen2vl:gpuTyp" in str(info.value)


def test_cross_key_rules():
    with pytest.raises(ConfigError, match="qwen2vl:region"):
        make_config(cloud="aws")
    with pytest.raises(ConfigError, match="gpuNodesMin"):
        make_config(gpuNodesMin=3, gpuNodesMax=2)
    with pytest.raises(ConfigError, match="aws sells no A800-80GB shape") as info:
        make_config(cloud="aws", region="us-east-1", gpuType="A800-80GB")
    assert "qwen2vl:gpuType" in str(info.value) and "L4" in str(info.value) and "L40S" in str(info.value)


def test_did_you_mean_keeps_the_users_value():
    with pytest.raises(ConfigError) as info:
        parse_stack_config({"gpuTpye": "A10G"}, "eval")
    assert "pulumi config set qwen2vl:gpuType A10G --stack eval" in str(info.value)
    with pytest.raises(ConfigError) as info:
        parse_stack_config({"maxModelLength": "4096"}, "eval")
    assert "pulumi config set qwen2vl:maxModelLen 4096 --stack eval" in str(info.value)


AWS = {"cloud": "aws", "region": "us-east-1"}


def test_a_node_runs_gpus_over_tp_replicas_and_the_shape_follows_the_tp_size():
    from infra.nodepool import node_shape, replicas_per_node
    cfg = make_config(**AWS, gpuType="L4", tensorParallelSize=1)
    assert node_shape(cfg).instance == "g6.xlarge" and replicas_per_node(cfg) == 1
    cfg = make_config(**AWS, gpuType="L4", tensorParallelSize=4)
    assert node_shape(cfg).instance == "g6.12xlarge" and replicas_per_node(cfg) == 1
    cfg = make_config(**AWS, gpuInstanceType="g6.48xlarge", tensorParallelSize=4)
    assert cfg.gpu_type == "L4" and replicas_per_node(cfg) == 2
    cfg = make_config(**AWS, gpuInstanceType="g6.12xlarge", tensorParallelSize=1)
    assert replicas_per_node(cfg) == 4


def test_gpu_instance_type_names_the_shape_and_must_agree_with_gpu_type():
    with pytest.raises(ConfigError, match="qwen2vl:gpuType") as info:
        make_config(**AWS, gpuType="A10G", gpuInstanceType="g6.48xlarge")
    assert "carries L4 GPUs" in str(info.value)
    with pytest.raises(ConfigError, match="qwen2vl:gpuInstanceType") as info:
        make_config(**AWS, gpuInstanceType="g9.huge")
    assert "g6.48xlarge" in str(info.value)
    with pytest.raises(ConfigError, match="qwen2vl:gpuInstanceType"):
        make_config(**AWS, gpuInstanceType="m6i.xlarge")


def test_tp_across_nodes_is_refused_naming_tensor_parallel_size():
    with pytest.raises(ConfigError, match="qwen2vl:tensorParallelSize") as info:
        make_config(**AWS, gpuInstanceType="g6.12xlarge", tensorParallelSize=8)
    assert "across nodes is not supported" in str(info.value) and "g6.12xlarge has 4 GPUs" in str(info.value)
    with pytest.raises(ConfigError, match="qwen2vl:tensorParallelSize") as info:
        make_config(**AWS, gpuType="L4", tensorParallelSize=3)
    assert "must divide the GPUs of a node" in str(info.value) and "1, 2, 4, 8" in str(info.value)


def test_lists_parse_from_json():
    cfg = make_config(allowedCidrs=["10.0.0.0/8", "192.168.1.0/24"], allowedNamespaces=["apps"])
    assert cfg.allowed_cidrs == ("10.0.0.0/8", "192.168.1.0/24")
    with pytest.raises(ConfigError, match="allowedCidrs"):
        parse_stack_config({"allowedCidrs": json.dumps(["10.0.0.1/8"])}, "t")


def test_every_key_is_documented():
    for key in KEYS:
        assert key.doc.endswith(".") and len(key.doc) > 15, key.name
        assert key.allowed and key.example


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), key=st.sampled_from(KEY_NAMES))
def test_invalid_stack_file_registers_no_resource(tmp_path_factory, data, key):
    value = data.draw(_invalid_values(KEYS_BY_NAME[key]))
    stack_dir = write_stack(tmp_path_factory.mktemp("stack"), "broken", {f"qwen2vl:{key}": value})
    result = run_plan("broken", stack_dir)
    assert not result.ok
    assert f"qwen2vl:{key}" in result.error
    assert [r.type for r in result.resources] == ["pulumi:pulumi:Stack"]


def test_config_docs_are_current():
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    proc = subprocess.run([sys.executable, "scripts/config_docs.py", "--check"], cwd=REPO_ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
