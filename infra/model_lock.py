"""The model lock: the configured revision resolved to a full commit, with every file's size and sha256.

Made by scripts/lock_model.py with hub access and committed as infra/model.lock.json. It refuses a
revision whose config.json does not split at the configured TP sizes or whose weight shards are
incomplete (a shard shorter than its own safetensors header says).
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Callable, Iterable

from infra.preflight import PreflightRequest, run_preflight

LOCK_PATH = Path(__file__).resolve().parent / "model.lock.json"
SMALL_FILE_LIMIT = 64 * 1024 * 1024  # non-LFS files are hashed by downloading them


class LockError(Exception):
    """The revision must not be locked (or the hub could not be asked); the message says why."""


def load_lock(path: Path = LOCK_PATH) -> dict:
    return json.loads(path.read_text())


def lock_matches(lock: dict, repo: str, revision: str) -> bool:
    """The lock is resolved and is for this repository at this revision (a prefix of its commit)."""
    commit = lock.get("commit") or ""
    return bool(lock.get("resolved")) and lock.get("repo") == repo and commit.startswith(revision.lower())


def unresolved_lock(repo: str, revision: str) -> dict:
    return {"repo": repo, "revision": revision, "resolved": False, "commit": None, "files": [],
            "how_to_resolve": f"python scripts/lock_model.py --repo {repo} --revision {revision}"}


def shard_problems(name: str, size: int, read_range: Callable[[int, int], bytes]) -> list[str]:
    """A safetensors file is 8 bytes of header length, the JSON header, then the tensors' bytes; the
    header names every tensor's end offset, so a shard shorter than that is truncated."""
    if size < 8:
        return [f"{name}: {size} bytes, shorter than a safetensors header"]
    (header_len,) = struct.unpack("<Q", read_range(0, 8))
    if 8 + header_len > size:
        return [f"{name}: {size} bytes, its header alone is {header_len} bytes"]
    header = json.loads(read_range(8, 8 + header_len))
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    expected = 8 + header_len + end
    if size != expected:
        return [f"{name}: {size} bytes, its header describes {expected} bytes (truncated or padded download)"]
    return []


def check_config_splits(config: dict, tp_sizes: Iterable[int]) -> list[str]:
    problems = []
    for tp in tp_sizes:
        verdict = run_preflight(PreflightRequest(config, tp, "A100-80GB", max_model_len=4096, max_num_seqs=1))
        shape = [c for c in verdict.failures if c.name.startswith(("shape.", "attention_heads", "kv_heads", "vision"))]
        problems += [f"TP {tp}: [{c.name}] {c.message}" for c in shape]
    return problems


def resolve_lock(repo: str, revision: str, tp_sizes: Iterable[int], endpoint: str | None = None,
                 token: str | None = None, progress: Callable[[str], None] | None = None) -> dict:
    from huggingface_hub import HfApi, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import build_hf_headers, get_session

    import httpx2  # huggingface_hub's HTTP client (its requirement httpx2<3)

    say = progress or (lambda message: None)
    api = HfApi(endpoint=endpoint, token=token)
    hub = endpoint or "https://huggingface.co"
    try:
        info = api.model_info(repo, revision=revision, files_metadata=True)
    except HfHubHTTPError as error:
        raise LockError(f"the hub does not resolve {repo}@{revision}: {error}") from None
    except httpx2.TransportError as error:
        raise LockError(f"cannot reach the hub at {hub} ({type(error).__name__}: {error}); run this where it is "
                        "reachable, or set HF_ENDPOINT to a mirror") from None
    commit = info.sha
    say(f"{repo}@{revision} is commit {commit}")
    problems = []

    config_path = hf_hub_download(repo, "config.json", revision=commit, endpoint=endpoint, token=token)
    config = json.loads(Path(config_path).read_text())
    problems += check_config_splits(config, tp_sizes)

    siblings = {s.rfilename: s for s in info.siblings}
    index_name = "model.safetensors.index.json"
    if index_name in siblings:
        index_path = hf_hub_download(repo, index_name, revision=commit, endpoint=endpoint, token=token)
        listed = set(json.loads(Path(index_path).read_text())["weight_map"].values())
        problems += [f"{name}: listed in the index but absent" for name in sorted(listed - set(siblings))]

    headers = build_hf_headers(token=token)

    def reader(name: str) -> Callable[[int, int], bytes]:
        url = hf_hub_url(repo, name, revision=commit, endpoint=endpoint)

        def read_range(start: int, stop: int) -> bytes:
            response = get_session().get(url, headers={**headers, "Range": f"bytes={start}-{stop - 1}"},
                                         follow_redirects=True)
            response.raise_for_status()
            return response.content[: stop - start]

        return read_range

    files = []
    for name, sibling in sorted(siblings.items()):
        if name.endswith(".safetensors"):
            say(f"checking the header of {name}")
            problems += shard_problems(name, sibling.size, reader(name))
        if sibling.lfs is not None:
            sha256 = sibling.lfs.sha256
        elif sibling.size <= SMALL_FILE_LIMIT:
            local = hf_hub_download(repo, name, revision=commit, endpoint=endpoint, token=token)
            sha256 = hashlib.sha256(Path(local).read_bytes()).hexdigest()
        else:
            raise LockError(f"{name} is large but not an LFS file; its sha256 is unknown to the hub")
        files.append({"path": name, "size": sibling.size, "sha256": sha256})
    if problems:
        raise LockError(f"refusing to lock {repo}@{revision} (commit {commit}):\n  " + "\n  ".join(problems))
    return {
        "repo": repo,
        "revision": revision,
        "resolved": True,
        "commit": commit,
        "checked_tensor_parallel_sizes": sorted(set(tp_sizes)),
        "config": {"intermediate_size": config.get("intermediate_size")},
        "files": files,
    }
