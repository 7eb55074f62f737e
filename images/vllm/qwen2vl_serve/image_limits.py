"""Images as users send them, made to fit what vLLM 0.6.3 profiled for Qwen2-VL.

vLLM 0.6.3 sizes its memory profile for an image of at most 1280 x 28 x 28 pixels
(vllm/model_executor/models/qwen2_vl.py:643-644, `max_pixels=min(image_processor.max_pixels, 1280 * 28 * 28)`),
but processes real requests with the checkpoint's own limit (qwen2_vl.py:724-725), and its input
processor takes no min/max_pixels override (`input_processor_for_qwen2_vl(ctx, inputs)`, qwen2_vl.py:775).
A 12-megapixel photo would become ~15,000 image tokens and overflow max_model_len 8192. So the ingress
scales every image down to MAX_IMAGE_PIXELS (aspect kept) before vLLM sees it: Qwen2-VL's smart_resize then
rounds to multiples of 28 without exceeding it (qwen2_vl.py:606-612), i.e. at most MAX_IMAGE_TOKENS tokens.

Only `data:` URLs are accepted. vLLM would fetch an http(s) URL itself (vllm/multimodal/utils.py:61-64), from
inside the cluster, at any size: the ingress cannot bound what it never sees, and a URL to fetch is a way to
make the pod call anything it can reach. Clients send images inline.

The preflight (infra/preflight/memory.py) reads MAX_IMAGE_PIXELS from this file: one number for both.
This module imports only the standard library at load time; Pillow (a vLLM dependency, in the image's
requirements.lock) is imported when an image needs decoding.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math

PATCH = 14  # Qwen2-VL's ViT patch size
MERGE = 2  # 2 x 2 patches merge into one language-model token
TOKEN_PIXELS = (PATCH * MERGE) ** 2  # 28 x 28 pixels per image token
MAX_IMAGE_TOKENS = 1280
MAX_IMAGE_PIXELS = MAX_IMAGE_TOKENS * TOKEN_PIXELS
# Content parts whose URL vLLM 0.6.3 would fetch (vllm/entrypoints/chat_utils.py:408-421).
URL_PARTS = {"image_url": "data:image/", "audio_url": "data:audio/"}


class ImageRejected(ValueError):
    """A request's image the ingress refuses; the message is for the client (HTTP 400)."""


def fitted_size(width: int, height: int, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[int, int]:
    """The largest size with the same aspect ratio and at most `max_pixels` pixels (unchanged if it fits)."""
    if width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    new_w, new_h = max(1, math.floor(width * scale)), max(1, math.floor(height * scale))
    while new_w * new_h > max_pixels:  # floating point may land one row over
        new_h -= 1
    return new_w, new_h


def downscale_data_url(url: str, max_pixels: int = MAX_IMAGE_PIXELS) -> str:
    """The same image as a data URL of at most `max_pixels` pixels; the URL itself when it already fits."""
    from PIL import Image, UnidentifiedImageError

    header, _, payload = url.partition(",")
    if not payload or not header.endswith(";base64"):
        raise ImageRejected("an image data URL must be data:image/<type>;base64,<data>")
    try:
        raw = base64.b64decode(payload, validate=True)
        image = Image.open(io.BytesIO(raw))
        source_format = image.format
        target = fitted_size(*image.size, max_pixels)
        if target == image.size:
            return url
        image.draft("RGB", target)  # JPEG: decode at a reduced scale, far less memory for a 12 MP photo
        # vLLM converts every image to RGB itself (vllm/multimodal/utils.py:50).
        resized = image.convert("RGB").resize(target, Image.Resampling.LANCZOS)
    except (binascii.Error, UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
        raise ImageRejected(f"the image could not be decoded: {error}") from None
    out = io.BytesIO()
    if source_format == "JPEG":
        resized.save(out, "JPEG", quality=95)
        kind = "jpeg"
    else:
        resized.save(out, "PNG")
        kind = "png"
    return f"data:image/{kind};base64," + base64.b64encode(out.getvalue()).decode()


def fit_request_images(body: dict, max_pixels: int = MAX_IMAGE_PIXELS) -> bool:
    """Downscales, in place, every image of a chat request's messages; True when anything changed.
    Raises ImageRejected for a URL that is not an inline data URL."""
    changed = False
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else []:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in URL_PARTS:
                continue
            holder = part.get(kind)
            url = holder.get("url") if isinstance(holder, dict) else None
            if not isinstance(url, str) or not url.startswith(URL_PARTS[kind]):
                raise ImageRejected(f"{kind} must be an inline data URL ({URL_PARTS[kind]}...;base64,...): "
                                    "this endpoint does not fetch URLs")
            if kind == "image_url":
                fitted = downscale_data_url(url, max_pixels)
                if fitted != url:
                    holder["url"] = fitted
                    changed = True
    return changed


def fit_request_body(body: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> bytes:
    """A POSTed JSON body with its images fitted (fit_request_images); any other body unchanged."""
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return body  # vLLM answers malformed JSON itself
    if not isinstance(request, dict) or not fit_request_images(request, max_pixels):
        return body
    return json.dumps(request).encode()
