"""Zero-padding an AWQ checkpoint: the test packs a tiny random checkpoint itself, pads it, and
checks the dequantized weights and MLP outputs against the original."""

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from infra.checkpoint.padding import PaddingError, pad_checkpoint
from infra.preflight import PreflightRequest, run_preflight
from tests.conftest import REPO_ROOT

AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]  # AutoAWQ's nibble order inside an int32
HIDDEN, INTERMEDIATE, GROUP, LAYERS = 1024, 2944, 128, 2


def pack(values: np.ndarray) -> np.ndarray:
    """[K, N] 4-bit values -> [K, N / 8] int32, AWQ gemm order."""
    k, n = values.shape
    grouped = values.reshape(k, n // 8, 8).astype(np.uint32)
    packed = np.zeros((k, n // 8), dtype=np.uint32)
    for slot, column in enumerate(AWQ_ORDER):
        packed |= grouped[:, :, column] << np.uint32(4 * slot)
    return packed.view(np.int32)


def unpack(packed: np.ndarray) -> np.ndarray:
    raw = packed.view(np.uint32)
    k, n8 = raw.shape
    values = np.zeros((k, n8, 8), dtype=np.uint8)
    for slot, column in enumerate(AWQ_ORDER):
        values[:, :, column] = (raw >> np.uint32(4 * slot)) & np.uint32(0xF)
    return values.reshape(k, n8 * 8)


def dequantize(tensors: dict, prefix: str) -> np.ndarray:
    q = unpack(tensors[f"{prefix}.qweight"]).astype(np.float32)
    z = unpack(tensors[f"{prefix}.qzeros"]).astype(np.float32)
    s = tensors[f"{prefix}.scales"].astype(np.float32)
    group = q.shape[0] // s.shape[0]
    return (q - np.repeat(z, group, axis=0)) * np.repeat(s, group, axis=0)


def quantized_linear(rng, k: int, n: int) -> dict:
    return {
        "qweight": pack(rng.integers(0, 16, size=(k, n))),
        "qzeros": pack(rng.integers(0, 16, size=(k // GROUP, n))),
        "scales": rng.uniform(0.001, 0.02, size=(k // GROUP, n)).astype(np.float16),
    }


def config(intermediate=INTERMEDIATE, quant=None):
    return {
        "architectures": ["Qwen2ForCausalLM"], "hidden_size": HIDDEN, "intermediate_size": intermediate,
        "num_attention_heads": 8, "num_key_value_heads": 8, "num_hidden_layers": LAYERS, "vocab_size": 256,
        "max_position_embeddings": 4096, "torch_dtype": "float16",
        "quantization_config": quant or {"quant_method": "awq", "bits": 4, "group_size": GROUP, "zero_point": True,
                                         "version": "gemm"},
    }


def build_checkpoint(path, intermediate=INTERMEDIATE, drop=None, quant=None, seed=0):
    """Two shards with an index, like the hub's exports; tokenizer files to be copied along."""
    rng = np.random.default_rng(seed)
    shards = [{}, {}]
    for layer in range(LAYERS):
        shard = shards[layer % 2]
        prefix = f"model.layers.{layer}"
        for proj, (k, n) in {"gate_proj": (HIDDEN, intermediate), "up_proj": (HIDDEN, intermediate),
                             "down_proj": (intermediate, HIDDEN), "self_attn.o_proj": (HIDDEN, HIDDEN)}.items():
            where = f"{prefix}.mlp.{proj}" if "attn" not in proj else f"{prefix}.{proj}"
            for part, tensor in quantized_linear(rng, k, n).items():
                shard[f"{where}.{part}"] = tensor
        shard[f"{prefix}.input_layernorm.weight"] = np.ones(HIDDEN, dtype=np.float16)
    shards[0]["model.embed_tokens.weight"] = rng.normal(size=(256, HIDDEN)).astype(np.float16)
    if drop:
        for shard in shards:
            shard.pop(drop, None)
    path.mkdir(parents=True)
    weight_map = {}
    for number, shard in enumerate(shards, start=1):
        name = f"model-0000{number}-of-00002.safetensors"
        save_file(shard, path / name, metadata={"format": "pt"})
        weight_map.update({tensor: name for tensor in shard})
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (path / "config.json").write_text(json.dumps(config(intermediate, quant)))
    (path / "tokenizer.json").write_text('{"model": "stand-in"}')
    (path / "preprocessor_config.json").write_text("{}")
    return path


def all_tensors(path):
    tensors = {}
    for shard in sorted(path.glob("*.safetensors")):
        tensors.update(load_file(shard))
    return tensors


def tree_hash(path):
    digest = hashlib.sha256()
    for item in sorted(path.rglob("*")):
        digest.update(item.name.encode() + item.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def padded(tmp_path_factory):
    root = tmp_path_factory.mktemp("pad")
    src = build_checkpoint(root / "src")
    before = tree_hash(src)
    plan = pad_checkpoint(src, root / "dst", 3072)
    assert tree_hash(src) == before, "SRC was modified"
    return src, root / "dst", plan


def test_dequantized_weights_are_identical_then_exactly_zero(padded):
    src, dst, plan = padded
    original, result = all_tensors(src), all_tensors(dst)
    for layer in range(LAYERS):
        for proj in ("gate_proj", "up_proj"):
            prefix = f"model.layers.{layer}.mlp.{proj}"
            w0, w1 = dequantize(original, prefix), dequantize(result, prefix)
            assert w1.shape == (HIDDEN, 3072)
            assert np.array_equal(w1[:, :INTERMEDIATE], w0)
            assert not np.any(w1[:, INTERMEDIATE:])
        prefix = f"model.layers.{layer}.mlp.down_proj"
        w0, w1 = dequantize(original, prefix), dequantize(result, prefix)
        assert w1.shape == (3072, HIDDEN)
        assert np.array_equal(w1[:INTERMEDIATE], w0)
        assert not np.any(w1[INTERMEDIATE:])
    # Everything else is byte-for-byte the same.
    for name, tensor in original.items():
        if ".mlp." not in name:
            assert np.array_equal(result[name], tensor)


def mlp(tensors, layer, x):
    prefix = f"model.layers.{layer}.mlp"
    gate = x @ dequantize(tensors, f"{prefix}.gate_proj")
    up = x @ dequantize(tensors, f"{prefix}.up_proj")
    return (gate / (1 + np.exp(-gate)) * up) @ dequantize(tensors, f"{prefix}.down_proj")


def test_mlp_outputs_match(padded, capsys):
    src, dst, _ = padded
    original, result = all_tensors(src), all_tensors(dst)
    x = np.random.default_rng(1).normal(size=(16, HIDDEN)).astype(np.float32)
    worst = 0.0
    for layer in range(LAYERS):
        y0, y1 = mlp(original, layer, x), mlp(result, layer, x)
        worst = max(worst, float(np.max(np.abs(y1 - y0)) / np.max(np.abs(y0))))
    with capsys.disabled():
        print(f"\nlargest relative MLP output difference after padding: {worst:.2e}")
    assert worst < 1e-5


def test_padded_shapes_pass_the_preflight_where_the_original_fails(padded):
    src, dst, _ = padded
    for tp in (2, 4, 8):
        before = run_preflight(PreflightRequest(json.loads((src / "config.json").read_text()), tp, "A100-80GB",
                                                max_model_len=2048))
        after = run_preflight(PreflightRequest(json.loads((dst / "config.json").read_text()), tp, "A100-80GB",
                                               max_model_len=2048))
        assert "shape.text.mlp.down_proj" in {c.name for c in before.failures}, tp
        assert after.ok, (tp, after.summary())


def test_files_index_and_config_are_written(padded):
    src, dst, _ = padded
    assert json.loads((dst / "config.json").read_text())["intermediate_size"] == 3072
    assert (dst / "tokenizer.json").read_text() == (src / "tokenizer.json").read_text()
    assert (dst / "preprocessor_config.json").exists()
    index = json.loads((dst / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == json.loads((src / "model.safetensors.index.json").read_text())["weight_map"]
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in all_tensors(dst).values())


@pytest.mark.parametrize("kwargs, message", [
    ({"intermediate": 2880}, "not a multiple of the group size 128"),
    ({"drop": "model.layers.1.mlp.down_proj.qzeros"}, "model.layers.1.mlp.down_proj.qzeros is missing"),
    ({"quant": {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": True}}, "act-order"),
    ({"quant": {"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemv"}}, "'gemv' is not supported"),
])
def test_refusals_leave_dst_absent(tmp_path, kwargs, message):
    src = build_checkpoint(tmp_path / "src", **kwargs)
    with pytest.raises(PaddingError, match=message):
        pad_checkpoint(src, tmp_path / "dst", 3072)
    assert not (tmp_path / "dst").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["src"]  # no partial folder left behind


def test_never_overwrites(tmp_path):
    src = build_checkpoint(tmp_path / "src")
    (tmp_path / "dst").mkdir()
    with pytest.raises(PaddingError, match="already exists"):
        pad_checkpoint(src, tmp_path / "dst", 3072)
    with pytest.raises(PaddingError, match="outside SRC"):
        pad_checkpoint(src, src / "inner", 3072)


def test_cli_pads_to_the_smallest_size_for_a_tp(tmp_path):
    src = build_checkpoint(tmp_path / "src")
    proc = subprocess.run([sys.executable, "scripts/pad_checkpoint.py", str(src), str(tmp_path / "dst"), "--tp", "4"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # 2944 / 4 = 736 is not a multiple of 128; the smallest size whose quarter is, is 3072.
    assert json.loads((tmp_path / "dst" / "config.json").read_text())["intermediate_size"] == 3072
    assert "[2/2]" in proc.stdout
    again = subprocess.run([sys.executable, "scripts/pad_checkpoint.py", str(src), str(tmp_path / "dst"), "--tp", "4"],
                           cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "already exists" in again.stdout
