"""The ingress's limits as numbers: what every request is held to before vLLM sees it, and what the preflight
budgets for. Standard library only: infra/ reads this file directly (the image package is not installed beside
it), so the stack's defaults, the preflight and the ingress share each number.
"""

from __future__ import annotations

import math

MIB = 1024 * 1024
MEGAPIXEL = 1_000_000

# Qwen2-VL's ViT cuts images into 14 x 14 patches and merges 2 x 2 of them into one language-model token, so
# one token covers a 28 x 28 cell (the checkpoint's preprocessor_config.json: patch_size 14, merge_size 2).
PATCH = 14
MERGE = 2
TOKEN_SIDE = PATCH * MERGE
TOKEN_PIXELS = TOKEN_SIDE**2
# The checkpoint's own resize bounds (preprocessor_config.json of Qwen/Qwen2-VL-*-Instruct*: min_pixels 3136,
# max_pixels 12845056), which vLLM 0.6.3 applies to real requests (vllm/model_executor/models/qwen2_vl.py:724-725).
CHECKPOINT_MIN_PIXELS = 56 * 56
CHECKPOINT_MAX_PIXELS = 28 * 28 * 16384
# transformers 4.46.1 smart_resize refuses an image with a side under one cell or an aspect ratio over 200
# (models/qwen2_vl/image_processing_qwen2_vl.py:111-116).
MAX_ASPECT_RATIO = 200
# vLLM 0.6.3 profiles memory with the largest image its processor makes under max_pixels = 1280 x 28 x 28
# (qwen2_vl.py:636-647: a 9999999 x 9999999 image, min/max pixels clipped to that): profiled_image_tokens() below
# works that out to a 980 x 980 pixel grid, 1225 tokens. The ingress resizes every image so that its real count,
# under the checkpoint's bounds, is at most this; the preflight budgets the profile with the same number.
PROFILE_MAX_PIXELS = 1280 * TOKEN_PIXELS
# Images per prompt: vLLM 0.6.3 allows one unless --limit-mm-per-prompt says otherwise
# (vllm/entrypoints/chat_utils.py:204 `self._allowed_items.get(modality, 1)`), and its memory profile gives each
# sequence one image (vllm/multimodal/registry.py:225-229). The server passes no such flag.
IMAGES_PER_PROMPT = 1

# Defaults of the stack config keys maxRequestMib and maxImageMegapixels (infra/config.py).
DEFAULT_MAX_REQUEST_MIB = 20
# Decoded size of an image as sent, before the ingress shrinks it: a 48-megapixel phone photo passes; a
# decompression bomb (a small file that decodes to gigabytes) is refused from its header, before decoding.
DEFAULT_MAX_IMAGE_MEGAPIXELS = 50


def image_tokens(width: int, height: int, min_pixels: int = CHECKPOINT_MIN_PIXELS,
                 max_pixels: int = CHECKPOINT_MAX_PIXELS) -> int:
    """Language-model tokens Qwen2-VL's processor gives an image of this size (transformers 4.46.1,
    models/qwen2_vl/image_processing_qwen2_vl.py:99-127, `smart_resize`, as vLLM 0.6.3 calls it at
    qwen2_vl.py:606-613 with factor 28). The processor resizes to a grid of 28-pixel cells, one token each:
    each side to its nearest multiple of 28 (:117-118, Python's round); if that grid has more than max_pixels,
    the image is first scaled to max_pixels' area and each side taken down to a multiple of 28 (:119-122); if
    fewer than min_pixels, scaled to min_pixels' area and taken up (:123-126). Raises ValueError for the sizes
    the processor refuses (:111-116)."""
    if min(width, height) < TOKEN_SIDE:
        raise ValueError(f"a {width} x {height} image has a side under {TOKEN_SIDE} pixels, which Qwen2-VL cannot take")
    if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        raise ValueError(f"a {width} x {height} image is more than {MAX_ASPECT_RATIO} times as long as it is wide, "
                         "which Qwen2-VL cannot take")
    rows, cols = round(height / TOKEN_SIDE), round(width / TOKEN_SIDE)
    if rows * cols * TOKEN_PIXELS > max_pixels:
        shrink = math.sqrt(height * width / max_pixels)
        rows, cols = math.floor(height / shrink / TOKEN_SIDE), math.floor(width / shrink / TOKEN_SIDE)
    elif rows * cols * TOKEN_PIXELS < min_pixels:
        grow = math.sqrt(min_pixels / (height * width))
        rows, cols = math.ceil(height * grow / TOKEN_SIDE), math.ceil(width * grow / TOKEN_SIDE)
    return rows * cols


def profiled_image_tokens() -> int:
    """The image tokens of vLLM 0.6.3's memory profile: its largest image, a 9999999 x 9999999 one under the
    checkpoint's bounds clipped to PROFILE_MAX_PIXELS (qwen2_vl.py:636-647)."""
    return image_tokens(9999999, 9999999, min_pixels=max(CHECKPOINT_MIN_PIXELS, TOKEN_PIXELS),
                        max_pixels=min(CHECKPOINT_MAX_PIXELS, PROFILE_MAX_PIXELS))


MAX_IMAGE_TOKENS = profiled_image_tokens()
MAX_IMAGE_PIXELS = MAX_IMAGE_TOKENS * TOKEN_PIXELS
