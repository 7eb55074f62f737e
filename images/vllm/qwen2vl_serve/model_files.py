"""The model's files against its lock: fetch the locked commit into the cache volume, verify every file's
size and sha256, and refuse to go on when anything differs (a corrupt download never serves).

    python -m qwen2vl_serve.model_files verify --lock model.lock.json --dir /models/qwen2vl
    python -m qwen2vl_serve.model_files fetch --lock model.lock.json --dir /models/qwen2vl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

CHUNK = 8 * 1024 * 1024


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(directory: Path, lock: dict) -> list[str]:
    """Every problem with the files under `directory` compared with the lock (empty = all match)."""
    problems = []
    for entry in lock["files"]:
        path = directory / entry["path"]
        if not path.is_file():
            problems.append(f"{entry['path']}: missing")
            continue
        size = path.stat().st_size
        if size != entry["size"]:
            problems.append(f"{entry['path']}: {size} bytes, the lock says {entry['size']}")
            continue
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            problems.append(f"{entry['path']}: sha256 {actual}, the lock says {entry['sha256']}")
    return problems


def fetch(lock: dict, directory: Path, token: str | None = None) -> None:
    """Download exactly the locked files at the locked commit (HF_ENDPOINT selects a mirror)."""
    if not lock.get("resolved") or not lock.get("commit"):
        raise RuntimeError(f"the model lock for {lock.get('repo')} is not resolved; run scripts/lock_model.py")
    from huggingface_hub import snapshot_download

    snapshot_download(lock["repo"], revision=lock["commit"], local_dir=directory, token=token,
                      allow_patterns=[entry["path"] for entry in lock["files"]])


# What vLLM 0.6.3 reads from a Qwen2-VL repository: config, tokenizer, processor and chat template (json,
# merges.txt) and the safetensors shards.
SNAPSHOT_PATTERNS = ["*.json", "*.txt", "*.safetensors"]


def download_revision(repo: str, revision: str, cache_dir: str | None, token: str | None = None) -> Path:
    """The local snapshot of `repo` at `revision` (downloaded into the hub cache layout under `cache_dir`,
    the same layout vLLM's --download-dir uses, so an earlier download is reused). Given to vLLM as
    --model, it makes weights, tokenizer *and* processor come from the revision: vLLM 0.6.3 loads
    Qwen2-VL's processor by model name alone (vllm/model_executor/models/qwen2_vl.py:651,667,786), which
    for a hub name means the main branch."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo, revision=revision, cache_dir=cache_dir, token=token,
                                  allow_patterns=SNAPSHOT_PATTERNS))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fetch and verify the locked model files.")
    parser.add_argument("action", choices=("fetch", "verify"))
    parser.add_argument("--lock", type=Path, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--token-file", type=Path, help="hub token (gated or private repositories)")
    args = parser.parse_args(argv)
    lock = json.loads(args.lock.read_text())
    if args.action == "fetch":
        token = args.token_file.read_text().strip() if args.token_file and args.token_file.exists() else None
        fetch(lock, args.dir, token)
    problems = verify(args.dir, lock)
    if problems:
        print(f"model files in {args.dir} do not match the lock of {lock['repo']}@{lock.get('commit')}; "
              "refusing to serve:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print(f"{len(lock['files'])} files of {lock['repo']}@{lock['commit']} verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
