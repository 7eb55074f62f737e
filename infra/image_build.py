"""What goes into the serving image and what it is called, as data (no Pulumi import).

The workload is built with `image_reference(cfg, model_dir)`: the configured image, or a
content-addressed name for the image the stack builds (its tag hashes everything that goes into the
build, so the smoke Job reruns exactly when the image changes). The ServingImage component swaps that
name for the pushed image's `name@sha256:digest`, so pods never run a moving tag.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from infra import pins
from infra.config import StackConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
IMAGE_NAME = "qwen2vl-vllm"
DOCKERFILE = REPO_ROOT / "images" / "vllm" / "Dockerfile"
# The registry build cache's tag, next to the image's content tags in the stack's repository.
BUILD_CACHE_TAG = "buildcache"
# Everything the Dockerfile copies from the build context (see .dockerignore).
CONTEXT_INPUTS = ("images/vllm/Dockerfile", "images/vllm/build-requirements.lock", "images/vllm/requirements.lock",
                  "images/vllm/qwen2vl_serve", "infra/model.lock.json")


def build_args(cfg: StackConfig, model_dir: str) -> dict[str, str]:
    """The Dockerfile's build args, all from pins and the stack's model settings."""
    return {
        "CUDA_BASE_IMAGE": pins.CUDA_BASE_IMAGE,
        "CUDA_VERSION": pins.CUDA_VERSION,
        "PYTHON_VERSION": pins.PYTHON_VERSION,
        "VLLM_VERSION": pins.VLLM_VERSION,
        "RAY_VERSION": pins.RAY_VERSION,
        "MODEL_REPO": cfg.model_repo,
        "MODEL_REVISION": cfg.model_revision,
        "MODEL_DIR": model_dir,
        "BAKE_MODEL": "true" if cfg.bake_model else "false",
    }


def content_tag(cfg: StackConfig, model_dir: str) -> str:
    digest = hashlib.sha256(json.dumps(build_args(cfg, model_dir), sort_keys=True).encode())
    for name in CONTEXT_INPUTS:
        path = REPO_ROOT / name
        for item in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(item.relative_to(REPO_ROOT).as_posix().encode() + item.read_bytes())
    return f"{pins.VLLM_VERSION}-{digest.hexdigest()[:12]}"


def image_reference(cfg: StackConfig, model_dir: str) -> str:
    return cfg.image or f"{IMAGE_NAME}:{content_tag(cfg, model_dir)}"
