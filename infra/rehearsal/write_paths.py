"""Where vLLM 0.6.3.post1 (and the libraries it calls) write at run time, resolved under a container's
environment, and whether each path lands on a writable mount. Pure, so the workload's tests can reuse it.

The CPU rehearsal cannot reach these code paths (custom all-reduce needs NVLink GPUs at TP > 1, Triton
compiles only for GPUs, the hub cache is used only for a hub model, guided decoding is not exercised),
so they are checked statically. Each rule is read from the pinned sources (vLLM 0.6.3.post1 wheel; the
library versions are those of images/vllm/requirements.lock) and cited next to it.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Callable, Mapping

from infra.rehearsal.manifests import Container


@dataclass(frozen=True)
class WritePath:
    writer: str
    path: str
    decided_by: tuple[str, ...]  # the env vars that move it, most specific first
    source: str
    gpu_only: bool
    off_switch: str = ""  # an env setting that stops the write altogether


@dataclass(frozen=True)
class WriteCheck:
    container: str
    write: WritePath
    writable: bool
    where: str  # the mount that holds the path, or "the root filesystem"

    @property
    def message(self) -> str:
        if self.writable:
            return f"{self.write.writer}: {self.write.path} is on {self.where} (writable)"
        return (f"container {self.container}: {self.write.writer} writes {self.write.path}, which is on {self.where} "
                f"(read-only); set {' or '.join(self.write.decided_by)} to a path under a writable mount"
                f"{', or ' + self.write.off_switch if self.write.off_switch else ''} [{self.write.source}]")


def _home(env: Mapping[str, str]) -> str:
    return env.get("HOME", "/")


def _expanduser(path: str, env: Mapping[str, str]) -> str:
    return _home(env) + path[1:] if path.startswith("~") else path


def cache_root(env: Mapping[str, str]) -> str:
    """vllm/envs.py:71-75 get_default_cache_root: $XDG_CACHE_HOME, else ~/.cache."""
    return env.get("XDG_CACHE_HOME") or posixpath.join(_home(env), ".cache")


def config_root(env: Mapping[str, str]) -> str:
    """vllm/envs.py:78-82 get_default_config_root: $XDG_CONFIG_HOME, else ~/.config."""
    return env.get("XDG_CONFIG_HOME") or posixpath.join(_home(env), ".config")


def vllm_cache_root(env: Mapping[str, str]) -> str:
    """vllm/envs.py:139-145: VLLM_CACHE_ROOT, else <cache root>/vllm, expanded."""
    return _expanduser(env.get("VLLM_CACHE_ROOT") or posixpath.join(cache_root(env), "vllm"), env)


def vllm_config_root(env: Mapping[str, str]) -> str:
    """vllm/envs.py:125-133: VLLM_CONFIG_ROOT, else <config root>/vllm, expanded."""
    return _expanduser(env.get("VLLM_CONFIG_ROOT") or posixpath.join(config_root(env), "vllm"), env)


def usage_stats_enabled(env: Mapping[str, str]) -> bool:
    """vllm/envs.py:237-241 and vllm/usage/usage_lib.py:40-58: off when VLLM_NO_USAGE_STATS=1,
    VLLM_DO_NOT_TRACK=1 or DO_NOT_TRACK=1 (or a do_not_track file exists, which a fresh pod lacks)."""
    do_not_track = (env.get("VLLM_DO_NOT_TRACK") or env.get("DO_NOT_TRACK") or "0") == "1"
    return not (do_not_track or env.get("VLLM_NO_USAGE_STATS", "0") == "1")


def _rules() -> list[Callable[[Mapping[str, str]], WritePath | None]]:
    def p2p_cache(env):
        return WritePath(
            "vLLM custom all-reduce P2P cache", posixpath.join(vllm_cache_root(env), "gpu_p2p_access_cache_for_0,1,2,3.json"),
            ("VLLM_CACHE_ROOT", "XDG_CACHE_HOME", "HOME"),
            "vllm/distributed/device_communicators/custom_all_reduce_utils.py:195-198 os.makedirs(VLLM_CACHE_ROOT); "
            "vllm/envs.py:139-145", gpu_only=True)

    def usage_stats(env):
        if not usage_stats_enabled(env):
            return None
        return WritePath(
            "vLLM usage stats", posixpath.join(vllm_config_root(env), "usage_stats.json"),
            ("VLLM_CONFIG_ROOT", "XDG_CONFIG_HOME", "HOME"),
            "vllm/usage/usage_lib.py:23-24,215-218; vllm/envs.py:125-133", gpu_only=False,
            off_switch="set VLLM_NO_USAGE_STATS=1")

    def triton_cache(env):
        # triton 3.0.0 python/triton/runtime/cache.py: FileCacheManager uses $TRITON_CACHE_DIR, else
        # default_cache_dir() = Path.home()/.triton/cache
        # (https://github.com/triton-lang/triton/blob/v3.0.0/python/triton/runtime/cache.py)
        return WritePath(
            "Triton kernel cache", env.get("TRITON_CACHE_DIR") or posixpath.join(_home(env), ".triton", "cache"),
            ("TRITON_CACHE_DIR", "HOME"), "triton v3.0.0 python/triton/runtime/cache.py default_cache_dir", gpu_only=True)

    def outlines_cache(env):
        # outlines 0.0.46 outlines/caching.py: $OUTLINES_CACHE_DIR, else ~/.cache/outlines (expanduser,
        # not XDG) (https://github.com/outlines-dev/outlines/blob/0.0.46/outlines/caching.py); imported
        # by vllm/model_executor/guided_decoding/outlines_logits_processors.py on the first guided request.
        return WritePath(
            "outlines guided-decoding cache",
            env.get("OUTLINES_CACHE_DIR") or posixpath.join(_home(env), ".cache", "outlines"),
            ("OUTLINES_CACHE_DIR", "HOME"), "outlines 0.0.46 outlines/caching.py", gpu_only=False)

    def hub_cache(env):
        # huggingface_hub constants.py: HF_HUB_CACHE, else $HF_HOME/hub, HF_HOME else
        # $XDG_CACHE_HOME/huggingface else ~/.cache/huggingface. vLLM 0.6.3.post1 passes download_dir
        # only to the weight download; config and tokenizer go through transformers' default cache
        # (vllm/transformers_utils/config.py get_config: AutoConfig.from_pretrained without cache_dir).
        home = env.get("HF_HOME") or posixpath.join(env.get("XDG_CACHE_HOME") or posixpath.join(_home(env), ".cache"),
                                                    "huggingface")
        return WritePath(
            "Hugging Face hub cache (config, tokenizer)", env.get("HF_HUB_CACHE") or posixpath.join(_expanduser(home, env), "hub"),
            ("HF_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME", "HOME"),
            "huggingface_hub constants.py HF_HOME/HF_HUB_CACHE; vllm/transformers_utils/config.py get_config",
            gpu_only=False)

    def rpc_sockets(env):
        return WritePath(
            "vLLM frontend RPC sockets", env.get("VLLM_RPC_BASE_PATH") or env.get("TMPDIR") or "/tmp",
            ("VLLM_RPC_BASE_PATH", "TMPDIR"), "vllm/envs.py:165-166 tempfile.gettempdir()", gpu_only=False)

    return [p2p_cache, usage_stats, triton_cache, outlines_cache, hub_cache, rpc_sockets]


def resolve(env: Mapping[str, str]) -> list[WritePath]:
    return [path for rule in _rules() if (path := rule(env)) is not None]


def check(container: Container, env: Mapping[str, str]) -> list[WriteCheck]:
    """Each write path of vLLM under `env` (the container's full environment, HOME included), and
    whether the container can write there: a writable mount holds it, or the root is writable."""
    checks = []
    for write in resolve(env):
        mount = container.mount_at(write.path)
        if mount is None:
            checks.append(WriteCheck(container.name, write, not container.read_only_root, "the root filesystem"))
        else:
            kind = {"claim": "volume claim", "emptyDir": "emptyDir", "files": "secret/config files"}[mount.volume.kind]
            checks.append(WriteCheck(container.name, write, mount.writable, f"the {kind} mount {mount.path}"))
    return checks
