"""The serving image reference the workload runs."""

from __future__ import annotations

from infra import pins
from infra.config import StackConfig

IMAGE_NAME = "qwen2vl-vllm"


def default_image_tag() -> str:
    return f"{pins.VLLM_VERSION}-cuda{pins.CUDA_VERSION}-ray{pins.RAY_VERSION}"


def image_reference(cfg: StackConfig) -> str:
    """The configured image, else the image built from images/vllm with the pinned versions."""
    return cfg.image or f"{IMAGE_NAME}:{default_image_tag()}"
