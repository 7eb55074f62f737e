"""Images as users send them, made to fit what vLLM 0.6.3 profiled for Qwen2-VL.

vLLM 0.6.3 sizes its memory profile for an image of MAX_IMAGE_TOKENS language-model tokens
(limits.profiled_image_tokens), but processes real requests with the checkpoint's
own bounds (vllm/model_executor/models/qwen2_vl.py:724-725), and its input processor takes no min/max_pixels
override (`input_processor_for_qwen2_vl(ctx, inputs)`, qwen2_vl.py:775). A 12-megapixel photo would become
~15,000 image tokens and overflow max_model_len 8192. So the ingress resizes every image, aspect kept, until
the count Qwen2-VL's processor will really give it (limits.image_tokens) is at most MAX_IMAGE_TOKENS. Fitting the
pixel area alone is not enough: the processor rounds each side to the nearest multiple of 28, up as often
as down, so an image of exactly 1280 x 28 x 28 pixels can come to 1515 tokens (14134 x 71).

Only `data:` URLs are accepted. vLLM would fetch an http(s) URL itself (vllm/multimodal/utils.py:61-64), from
inside the cluster, at any size: the ingress cannot bound what it never sees, and a URL to fetch is a way to
make the pod call anything it can reach. Clients send images inline.

The preflight (infra/preflight/memory.py) reads MAX_IMAGE_TOKENS from limits.py: one bound for both.
This module imports only the standard library at load time; Pillow (a vLLM dependency, in the image's
requirements.lock) is imported when an image needs decoding.
"""

from __future__ import annotations

import base64
import binascii
import io
import math

from qwen2vl_serve.limits import MAX_IMAGE_PIXELS, MAX_IMAGE_TOKENS, MEGAPIXEL, image_tokens

# Content parts whose URL vLLM 0.6.3 would fetch (vllm/entrypoints/chat_utils.py:408-421).
URL_PARTS = {"image_url": "data:image/", "audio_url": "data:audio/"}
# Each step of the search for a size that fits takes this much off both sides.
SHRINK_STEP = 0.99


class ImageRejected(ValueError):
    """A request's image the ingress refuses; the message is for the client (HTTP 400)."""


def fitted_size(width: int, height: int) -> tuple[int, int]:
    """The largest size found, aspect kept, whose real token count is at most MAX_IMAGE_TOKENS (the size
    itself when it fits). Starts from MAX_IMAGE_PIXELS' area and shrinks by SHRINK_STEP while the processor's
    rounding would overshoot. The short side is rounded up and the long side down, so the aspect ratio never
    grows past what the processor accepts. Raises ValueError for sizes the processor refuses."""
    image_tokens(width, height)  # refuses what the processor refuses, before any arithmetic on it
    scale = min(1.0, math.sqrt(MAX_IMAGE_PIXELS / (width * height)))
    landscape = width >= height
    long_side, short_side = (width, height) if landscape else (height, width)
    while True:
        new_long = math.floor(long_side * scale) if scale < 1 else long_side
        new_short = math.ceil(short_side * scale) if scale < 1 else short_side
        size = (new_long, new_short) if landscape else (new_short, new_long)
        if image_tokens(*size) <= MAX_IMAGE_TOKENS:
            return size
        scale *= SHRINK_STEP


def downscale_data_url(url: str, max_source_pixels: int) -> str:
    """The same image as a data URL that fits (fitted_size); the URL itself when it already fits. An image
    whose header declares more than `max_source_pixels` pixels is refused before it is decoded."""
    from PIL import Image, UnidentifiedImageError

    header, _, payload = url.partition(",")
    if not payload or not header.endswith(";base64"):
        raise ImageRejected("an image data URL must be data:image/<type>;base64,<data>")
    try:
        raw = base64.b64decode(payload, validate=True)
        image = Image.open(io.BytesIO(raw))  # reads the header only
        width, height = image.size
        if width * height > max_source_pixels:
            raise ImageRejected(f"the image is {width} x {height} pixels; this endpoint decodes at most "
                                f"{max_source_pixels / MEGAPIXEL:g} megapixels per image: send it smaller")
        try:
            target = fitted_size(width, height)
        except ValueError as error:
            raise ImageRejected(str(error)) from None
        if target == image.size:
            return url
        source_format = image.format
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


def image_parts(request: dict) -> list[tuple[str, dict]]:
    """(kind, part) of every URL-carrying content part of a chat request's messages, in order."""
    parts = []
    messages = request.get("messages")
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else []:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in URL_PARTS:
                parts.append((kind, part))
    return parts


def fit_request_images(request: dict, max_source_pixels: int) -> bool:
    """Downscales, in place, every image of a chat request's messages; True when anything changed.
    Raises ImageRejected for a URL that is not an inline data URL, or an image that cannot be served."""
    changed = False
    for kind, part in image_parts(request):
        holder = part.get(kind)
        url = holder.get("url") if isinstance(holder, dict) else None
        if not isinstance(url, str) or not url.startswith(URL_PARTS[kind]):
            raise ImageRejected(f"{kind} must be an inline data URL ({URL_PARTS[kind]}...;base64,...): "
                                "this endpoint does not fetch URLs")
        if kind == "image_url":
            fitted = downscale_data_url(url, max_source_pixels)
            if fitted != url:
                holder["url"] = fitted
                changed = True
    return changed
