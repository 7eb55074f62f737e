"""The preflight against the acceptance grid in shared/reference/model-and-kernels.md, and its shape
rules against an independent brute-force split of the weight matrices."""

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infra import pins
from infra.preflight import PreflightInputError, PreflightRequest, catalog_request, run_preflight
from infra.preflight.engine import _Evaluation
from infra.preflight.model import parse_model_config
from tests.conftest import REPO_ROOT

M72 = pins.MODEL_REPO
M72_FIRST = f"{M72}@3eb1d44f25054b16ac89a34bae70ca3049fcf1d0"
M72_TRUNCATED = f"{M72}@688e28d5b7b74ee3124892519a44f20512017d61"
M7 = "Qwen/Qwen2-VL-7B-Instruct-AWQ"
M2 = "Qwen/Qwen2-VL-2B-Instruct-AWQ"


def verdict(model, tp, gpu="A100-80GB", **kwargs):
    kwargs.setdefault("max_model_len", 8192)
    kwargs.setdefault("max_num_seqs", 16)
    return run_preflight(catalog_request(model, tensor_parallel_size=tp, gpu=gpu, **kwargs))


def failed(v):
    return {c.name for c in v.failures}


def check(v, name):
    return next(c for c in v.checks if c.name == name)


# -- the acceptance grid --------------------------------------------------------------------------
@pytest.mark.parametrize("tp, loads", [(1, True), (2, False), (4, False), (8, False)])
def test_72b_first_revision(tp, loads):
    v = verdict(M72_FIRST, tp)
    assert v.ok is loads
    if not loads:
        down = check(v, "shape.text.mlp.down_proj")
        assert not down.ok
        k = 29568 // tp
        assert f"Weight input_size_per_partition = {k} is not divisible by min_thread_k = 128" in down.message
        assert "29696" in down.fix


def test_72b_first_revision_tp4_is_the_famous_error():
    down = check(verdict(M72_FIRST, 4), "shape.text.mlp.down_proj")
    assert down.message.startswith(
        "Weight input_size_per_partition = 7392 is not divisible by min_thread_k = 128. "
        "Consider reducing tensor_parallel_size or running with --quantization gptq."
    )
    assert "padded to 29696 (smallest that loads at TP 4; 29696 loads at TP 1/2/4/8)" in down.fix
    assert "python scripts/pad_checkpoint.py SRC DST --tp 4" in down.fix
    assert "--tensor-parallel-size 1" in down.fix
    # The plain kernel does not help: 7392 is not a multiple of the group size 128 either.
    assert "--quantization awq" not in down.fix


@pytest.mark.parametrize("tp", [1, 2, 4, 8])
def test_72b_fixed_revision_loads_at_every_tp(tp):
    v = verdict(M72, tp)
    assert not any(c.name.startswith("shape.") for c in v.failures)
    assert v.ok


def test_72b_truncated_revision_is_refused():
    v = verdict(M72_TRUNCATED, 4)
    assert failed(v) == {"revision"}
    assert "truncated" in check(v, "revision").message


@pytest.mark.parametrize("tp, loads", [(1, True), (2, True), (4, True), (8, False)])
def test_7b(tp, loads):
    v = verdict(M7, tp, gpu="L4")
    assert v.ok is loads
    if not loads:
        assert "attention_heads" in failed(v)
        assert "Total number of attention heads (28) must be divisible by tensor parallel size (8)." in check(
            v, "attention_heads").message
        assert "--tensor-parallel-size 1 or 2 or 4" in check(v, "attention_heads").fix


@pytest.mark.parametrize("tp, loads", [(1, True), (2, True), (4, False), (8, False)])
def test_2b(tp, loads):
    v = verdict(M2, tp, gpu="L4")
    assert v.ok is loads
    if tp == 4:
        assert failed(v) == {"shape.text.mlp.down_proj"}
        assert "input_size_per_partition = 2240" in check(v, "shape.text.mlp.down_proj").message
        assert "padded to 9216" in check(v, "shape.text.mlp.down_proj").fix


def test_profile_runs_as_many_images_as_vllm_063():
    """vllm/worker/model_runner.py:1238-1250 (0.6.3): min(max_num_seqs, max_num_batched_tokens //
    max_mm_tokens) sequences, each with one largest image; max_mm_tokens = image + video maxima (1225 each),
    max_num_batched_tokens = max(max_model_len, 5120) for a multimodal model (vllm/config.py:1003-1016)."""
    from infra.preflight.memory import activation_reserve_bytes, profiled_sequences

    dims = parse_model_config(catalog_request(M72, tensor_parallel_size=4, gpu="A100-80GB").model_config)
    assert [profiled_sequences(dims, length, 16) for length in (2048, 8192, 16384)] == [2, 3, 6]
    assert profiled_sequences(dims, 8192, 2) == 2
    # Three images at 8192 tokens cost more activation than one, and more sequences than profiled cost nothing.
    assert activation_reserve_bytes(dims, 4, 8192, 16) == activation_reserve_bytes(dims, 4, 8192, 3)
    assert activation_reserve_bytes(dims, 4, 8192, 3) > activation_reserve_bytes(dims, 4, 8192, 1)


def test_image_rules_use_the_ingress_image_limit():
    """The ingress resizes every image to at most MAX_IMAGE_TOKENS real tokens (images/vllm/qwen2vl_serve/
    limits.py), the count of vLLM 0.6.3's profile image (qwen2_vl.py:636-647: 980 x 980 pixels, 35 x 35 cells);
    the preflight's image-token rule and memory estimate read that same number."""
    from infra.preflight import memory

    sys.path.insert(0, str(REPO_ROOT / "images" / "vllm"))
    from qwen2vl_serve import limits

    assert memory.MAX_IMAGE_TOKENS == limits.MAX_IMAGE_TOKENS == 35 * 35
    short = verdict(M72, 4, max_model_len=limits.MAX_IMAGE_TOKENS + 1)
    assert "image_tokens" in failed(short)
    assert check(short, "image_tokens").fix == f"--max-model-len {limits.MAX_IMAGE_TOKENS + 2} or more"


def test_memory_72b_tp1_on_24gb_does_not_load_weights():
    v = verdict(M72, 1, gpu="L4")
    assert failed(v) == {"memory.weights"}
    assert "CUDA out of memory" in check(v, "memory.weights").message
    assert "A100" in check(v, "memory.weights").fix or "L40S" in check(v, "memory.weights").fix


def test_memory_72b_tp2_on_24gb_has_no_kv_space():
    v = verdict(M72, 2, gpu="L4")
    assert failed(v) == {"memory.kv_cache"}
    assert check(v, "memory.kv_cache").message.startswith("No available memory for the cache blocks.")


def test_memory_max_model_len_too_long_for_kv():
    # 16384, not 32768: at 32768 vLLM 0.6.3 profiles 12 images at once (32768 // 2560), which leaves a T4 no
    # KV cache at all (test_profile_runs_as_many_images_as_vllm_063).
    v = verdict(M72, 4, gpu="T4", max_model_len=16384)
    assert "memory.max_model_len" in failed(v)
    message = check(v, "memory.max_model_len").message
    assert "The model's max seq len (16384) is larger than the maximum number of tokens" in message
    fix = check(v, "memory.max_model_len").fix
    suggested = int(fix.split("--max-model-len ")[1].split(";")[0])
    assert verdict(M72, 4, gpu="T4", max_model_len=suggested).ok


def test_concurrency_is_a_warning_that_does_not_block():
    v = verdict(M72, 4, gpu="L4", max_model_len=8192, max_num_seqs=16)
    assert v.ok
    concurrency = check(v, "memory.concurrency")
    assert not concurrency.ok and concurrency.severity == "warning"
    # "about 12 on 24 GB GPUs" (reference): the estimate stays in that neighbourhood.
    assert 10 <= v.memory.concurrent_full_sequences <= 15
    assert verdict(M72, 4, gpu="A100-40GB").memory.concurrent_full_sequences >= 16


def test_kv_bytes_per_token_72b_tp4_is_80_kib():
    assert verdict(M72, 4).memory.kv_bytes_per_token == 80 * 1024
    assert 9.0 < verdict(M72, 4).memory.weights_gib < 11.0


@pytest.mark.parametrize("gpu", ["T4"])
def test_gpu_without_marlin_runs_the_plain_kernel(gpu):
    v = verdict(M72, 4, gpu=gpu, max_model_len=4096, max_num_seqs=4)
    assert v.kernel == "awq" and v.ok
    forced = verdict(M72, 4, gpu=gpu, quantization="awq_marlin", max_model_len=4096, max_num_seqs=4)
    assert failed(forced) == {"gpu_capability"}
    assert check(forced, "gpu_capability").message == (
        "The quantization method awq_marlin is not supported for the current GPU. "
        "Minimum capability: 80. Current capability: 75."
    )
    assert "--quantization awq" in check(forced, "gpu_capability").fix


def test_v100_runs_no_awq_kernel():
    v = verdict(M7, 2, gpu="V100")
    assert "gpu_capability" in failed(v)
    assert "Minimum capability: 75. Current capability: 70." in check(v, "gpu_capability").message
    fix = check(v, "gpu_capability")
    # The cheapest catalog shape with whole TP-2 replicas whose GPU runs AWQ: 2 x L4.
    assert "--gpu L4 (cheapest shape gcp g2-standard-24, 2 GPUs" in fix.fix
    assert [dict(c) for f in fix.fixes for c in f.changes] == [{"gpu": "L4"}]


# -- every fix the preflight offers passes the preflight itself when applied ------------------------
FIX_GRID = [(model, tp, gpu) for model in ("M72", "M72_FIRST", "M7", "M2") for tp in (1, 2, 4, 8)
            for gpu in ("L4", "T4", "V100", "A100-80GB")]


@pytest.mark.parametrize(("model", "tp", "gpu"), FIX_GRID)
def test_every_offered_change_passes_the_preflight(model, tp, gpu):
    config = globals()[model]
    v = verdict(config, tp, gpu=gpu)
    for failing in (c for c in v.checks if not c.ok):
        for fix in failing.fixes:
            for change in fix.changes:
                settings = {"tensor_parallel_size": tp, "gpu": gpu, **change}
                assert verdict(config, settings.pop("tensor_parallel_size"), **settings).ok, (failing.name, change)


def test_72b_first_upload_on_l4_does_not_offer_tp_1_which_runs_out_of_memory():
    fix = check(verdict(M72_FIRST, 4, gpu="L4"), "shape.text.mlp.down_proj").fix
    assert "--tensor-parallel-size 1" not in fix and "padded to 29696" in fix


def test_72b_tp2_on_l4_is_offered_tp4_before_another_gpu():
    fix = check(verdict(M72, 2, gpu="L4"), "memory.kv_cache").fix
    assert "--tensor-parallel-size 4" in fix


@pytest.mark.parametrize(("model_tp_gpu", "name"), [((M72, 1, "L4"), "memory.weights")])
def test_a_gpu_offered_for_memory_has_more_memory(model_tp_gpu, name):
    from infra.catalog import gpu as gpu_spec
    config, tp, gpu = model_tp_gpu
    changes = [c for f in check(verdict(config, tp, gpu=gpu), name).fixes for c in f.changes if "gpu" in c]
    assert changes and all(gpu_spec(c["gpu"]).memory_gib > gpu_spec(gpu).memory_gib for c in changes)
    assert "a GPU with more memory: --gpu" in check(verdict(config, tp, gpu=gpu), name).fix


def test_concurrency_fix_never_calls_a_smaller_gpu_larger():
    from infra.catalog import gpu as gpu_spec
    for gpu, tp in (("A100-80GB", 4), ("H100-80GB", 8)):
        v = verdict(M72, tp, gpu=gpu, max_model_len=32768, max_num_seqs=256)
        for c in v.checks:
            for f in c.fixes:
                for change in f.changes:
                    if "gpu" in change:
                        assert gpu_spec(change["gpu"]).memory_gib > gpu_spec(gpu).memory_gib, (gpu, change)


def test_bfloat16_needs_ampere():
    v = verdict(M7, 2, gpu="T4", dtype="bfloat16")
    assert "dtype" in failed(v)
    assert check(v, "dtype").message.startswith("Bfloat16 is only supported on GPUs with compute capability")


def test_plain_awq_kernel_runs_float16_only():
    v = verdict(M7, 2, gpu="A100-80GB", quantization="awq", dtype="bfloat16")
    assert check(v, "dtype").message.startswith("torch.bfloat16 is not supported for quantization method awq.")


def test_context_limits():
    assert "max_model_len" in failed(verdict(M72, 4, max_model_len=65536))
    short = verdict(M72, 4, max_model_len=1024)
    assert check(short, "image_tokens").message.startswith("Qwen2-VL cannot process 1 images in a prompt")


def _group64_config():
    return {
        "hidden_size": 4096, "intermediate_size": 6912, "num_attention_heads": 32, "num_key_value_heads": 8,
        "num_hidden_layers": 32, "vocab_size": 32000, "max_position_embeddings": 8192,
        "quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 64, "zero_point": True},
    }


@pytest.mark.parametrize(
    "version, loads, kernel_note",
    [(pins.VLLM_VERSION, False, None), ("0.7.2", False, None), ("0.7.3", True, "falls back"), ("0.24.0", True, "zero-pads")],
)
def test_vllm_version_behaviour_for_a_group64_checkpoint(version, loads, kernel_note):
    # K per rank = 6912 / 4 = 1728: not a multiple of Marlin's 128, but of the group size 64.
    v = run_preflight(PreflightRequest(_group64_config(), 4, "A100-80GB", vllm_version=version, max_model_len=4096))
    down = check(v, "shape.text.mlp.down_proj")
    assert down.ok is loads
    if kernel_note:
        assert kernel_note in down.message
    else:
        assert "--quantization awq" in down.fix


@pytest.mark.parametrize("version", ["0.7.3", "0.24.0", "0.32.0"])
def test_29568_still_fails_in_newer_vllm(version):
    v = verdict(M72_FIRST, 4, vllm_version=version)
    down = check(v, "shape.text.mlp.down_proj")
    assert not down.ok
    assert "The input size is not aligned with the quantized weight shape" in down.message


def test_bad_inputs_raise_input_errors():
    with pytest.raises(PreflightInputError, match="unknown GPU"):
        verdict(M72, 4, gpu="B200")
    with pytest.raises(PreflightInputError, match="not a version"):
        verdict(M72, 4, vllm_version="latest")
    with pytest.raises(PreflightInputError, match="unknown model"):
        verdict("Qwen/Nope", 4)


# -- the shape rules against brute force ------------------------------------------------------------
def brute_force_marlin_row_layer_loads(k_full, n, tp, group):
    """Split K's row indices across ranks and test each rank's slice and group boundaries directly."""
    rows = list(range(k_full))
    if k_full % tp:
        return False
    size = k_full // tp
    for rank in range(tp):
        shard = rows[rank * size:(rank + 1) * size]
        if len(shard) % 128 or n % 64:
            return False
        if group != -1 and group < k_full and (shard[0] % group or len(shard) % group):
            return False
    return True


def _config(hidden, intermediate, heads, kv, group):
    return {
        "hidden_size": hidden, "intermediate_size": intermediate, "num_attention_heads": heads,
        "num_key_value_heads": kv, "num_hidden_layers": 2, "vocab_size": 1024, "max_position_embeddings": 4096,
        "quantization_config": {"quant_method": "awq", "bits": 4, "group_size": group, "zero_point": True},
    }


dims = st.tuples(
    st.integers(4, 64).map(lambda x: x * 64),  # hidden
    st.integers(1, 400).map(lambda x: x * 32),  # intermediate
    st.sampled_from([1, 2, 4, 8]),  # tp
    st.sampled_from([32, 64, 128]),  # group
)


@settings(max_examples=300, deadline=None)
@given(dims)
def test_down_proj_rule_matches_brute_force(args):
    hidden, intermediate, tp, group = args
    request = PreflightRequest(_config(hidden, intermediate, 8, 8, group), tp, "A100-80GB", max_model_len=2048)
    evaluation = _Evaluation(request, parse_model_config(request.model_config), suggest=False)
    outcome = {name: o for name, _, o in evaluation.layer_outcomes()}["shape.text.mlp.down_proj"]
    assert outcome.ok is brute_force_marlin_row_layer_loads(intermediate, hidden, tp, group)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300).map(lambda x: x * 32), st.sampled_from([2, 4, 8]))
def test_padded_intermediate_is_the_smallest_that_loads(intermediate, tp):
    hidden = 1024
    request = PreflightRequest(_config(hidden, intermediate, 8, 8, 128), tp, "A100-80GB", max_model_len=2048)
    evaluation = _Evaluation(request, parse_model_config(request.model_config), suggest=False)
    padded = evaluation.smallest_padded_intermediate([tp])

    def loads(size):
        # gate_up is column parallel: N = 2 x size / tp must be a multiple of 64.
        return brute_force_marlin_row_layer_loads(size, hidden, tp, 128) and (2 * size // tp) % 64 == 0

    expected = next(size for size in range(intermediate, 4 * intermediate + 4096) if loads(size))
    assert padded == expected


# -- the command line -------------------------------------------------------------------------------
def run_cli(*args):
    return subprocess.run([sys.executable, "scripts/preflight.py", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=30)


def test_cli_json_contract_and_exit_codes(tmp_path):
    bad = run_cli("--model", M72_FIRST, "--tp", "4", "--gpu", "A100-80GB", "--json")
    assert bad.returncode == 1
    doc = json.loads(bad.stdout)
    assert doc["ok"] is False and set(doc) >= {"ok", "checks", "memory"}
    assert all(set(c) >= {"name", "ok", "message", "fix"} for c in doc["checks"])

    config = tmp_path / "config.json"
    from infra.catalog import catalog_model
    config.write_text(json.dumps(catalog_model(M72).config))
    good = run_cli("--model-config", str(config), "--quantization", "awq_marlin", "--tp", "4", "--gpu", "A100-80GB",
                   "--max-model-len", "8192", "--max-num-seqs", "16")
    assert good.returncode == 0, good.stdout
    assert "vLLM would load and serve" in good.stdout

    assert run_cli("--model", M72, "--tp", "four", "--gpu", "A100-80GB").returncode == 2
    assert run_cli("--model", M72, "--tp", "4", "--gpu", "A100-80GB", "--vllm-version", "x").returncode == 2
    config.write_text("{}")
    assert run_cli("--model-config", str(config), "--tp", "4", "--gpu", "L4").returncode == 2


def test_awq_vision_tower_without_modules_to_not_convert_fails_from_0_6_4():
    from infra.catalog import catalog_model

    config = catalog_model(M72).config_at(None)
    config["quantization_config"] = {**config["quantization_config"], "modules_to_not_convert": None}
    pinned = run_preflight(PreflightRequest(config, 4, "A100-80GB", max_model_len=8192, max_num_seqs=16))
    assert pinned.ok  # the pinned vLLM builds the vision tower unquantized
    newer = run_preflight(PreflightRequest(config, 4, "A100-80GB", vllm_version="0.6.4", max_model_len=8192))
    assert "vision_tower_quantization" in failed(newer)
