"""The model lock with the real huggingface_hub client against a hub-compatible server on 127.0.0.1:
a good revision is locked, a truncated-shard or non-splitting one refused, and the verify step
rejects a corrupted local file."""

import json
import struct
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save

from tests.conftest import REPO_ROOT
from tests.fake_hub import FakeHub

sys.path.insert(0, str(REPO_ROOT / "images" / "vllm"))
from qwen2vl_serve import model_files  # noqa: E402

REPO = "tiny-org/tiny-qwen2-vl-awq"


def config(intermediate):
    return json.dumps({
        "architectures": ["Qwen2VLForConditionalGeneration"], "hidden_size": 1024, "intermediate_size": intermediate,
        "num_attention_heads": 8, "num_key_value_heads": 8, "num_hidden_layers": 2, "vocab_size": 256,
        "max_position_embeddings": 4096,
        "quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True},
    }).encode()


def shard(seed, rows=64):
    rng = np.random.default_rng(seed)
    return save({"model.layers.0.mlp.down_proj.qweight": rng.integers(0, 2**31, size=(rows, 128), dtype=np.int32)})


def files(intermediate, truncate=False):
    first, second = shard(1), shard(2)
    if truncate:
        first = first[: len(first) // 3]
    index = {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                            "b": "model-00002-of-00002.safetensors"}}
    return {"config.json": config(intermediate), "model.safetensors.index.json": json.dumps(index).encode(),
            "model-00001-of-00002.safetensors": first, "model-00002-of-00002.safetensors": second,
            "tokenizer.json": b'{"model": "stand-in"}'}


@pytest.fixture
def hub(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    with FakeHub() as running:
        running.first = running.add_commit(REPO, files(2944), branch=None)   # does not split at TP 4
        running.truncated = running.add_commit(REPO, files(3072, truncate=True), branch=None)
        running.good = running.add_commit(REPO, files(3072), branch="main")
        monkeypatch.setenv("HF_ENDPOINT", running.url)
        yield running


def lock_cli(*args):
    return subprocess.run([sys.executable, "scripts/lock_model.py", "--repo", REPO, *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)


def test_good_revision_is_locked_from_a_short_id(hub, tmp_path):
    out = tmp_path / "lock.json"
    proc = lock_cli("--revision", hub.good[:7], "--tp", "4", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lock = json.loads(out.read_text())
    assert lock["commit"] == hub.good and lock["resolved"] is True and lock["revision"] == hub.good[:7]
    by_path = {f["path"]: f for f in lock["files"]}
    assert set(by_path) == set(files(3072))
    import hashlib
    for path, data in files(3072).items():
        assert by_path[path]["size"] == len(data)
        assert by_path[path]["sha256"] == hashlib.sha256(data).hexdigest()


def test_truncated_shard_is_refused(hub, tmp_path):
    out = tmp_path / "lock.json"
    proc = lock_cli("--revision", hub.truncated, "--out", str(out))
    assert proc.returncode == 1
    assert "model-00001-of-00002.safetensors" in proc.stdout and "truncated" in proc.stdout
    assert not out.exists()


def test_revision_that_does_not_split_at_tp_is_refused(hub, tmp_path):
    proc = lock_cli("--revision", hub.first, "--tp", "4", "--out", str(tmp_path / "lock.json"))
    assert proc.returncode == 1
    assert "TP 4: [shape.text.mlp.down_proj] Weight input_size_per_partition = 736" in proc.stdout


def test_unknown_revision_is_a_clear_error(hub, tmp_path):
    proc = lock_cli("--revision", "deadbeef", "--out", str(tmp_path / "lock.json"))
    assert proc.returncode == 1 and "does not resolve" in proc.stdout


def test_fetch_then_verify_and_a_corrupted_file_is_rejected(hub, tmp_path):
    out = tmp_path / "lock.json"
    assert lock_cli("--revision", "main", "--out", str(out)).returncode == 0
    lock = json.loads(out.read_text())
    target = tmp_path / "model"
    assert model_files.main(["fetch", "--lock", str(out), "--dir", str(target)]) == 0
    assert model_files.verify(target, lock) == []
    shard_path = target / "model-00002-of-00002.safetensors"
    data = bytearray(shard_path.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte, same size
    shard_path.write_bytes(bytes(data))
    problems = model_files.verify(target, lock)
    assert len(problems) == 1 and problems[0].startswith("model-00002-of-00002.safetensors: sha256")
    (target / "tokenizer.json").unlink()
    assert model_files.main(["verify", "--lock", str(out), "--dir", str(target)]) == 1


def test_fetch_refuses_an_unresolved_lock(tmp_path):
    from infra.model_lock import unresolved_lock

    with pytest.raises(RuntimeError, match="not resolved; run scripts/lock_model.py"):
        model_files.fetch(unresolved_lock(REPO, "abc1234"), tmp_path)


def test_shard_header_check_is_exact():
    from infra.model_lock import shard_problems

    blob = shard(3)
    read = lambda start, stop: blob[start:stop]  # noqa: E731
    assert shard_problems("s", len(blob), read) == []
    assert "truncated" in shard_problems("s", len(blob) - 1, read)[0]
    (header_len,) = struct.unpack("<Q", blob[:8])
    assert "header alone" in shard_problems("s", header_len, read)[0]
