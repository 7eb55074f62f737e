"""What the ingress refuses before a request reaches vLLM, and with which status: a pure module (standard
library at load time; Pillow only when an image is fitted), so each rule is tested without Ray or vLLM.

- 413: a body over max_request_bytes, judged on Content-Length and again while the body is read, so neither
  the replica nor vLLM holds or parses it whole.
- 400: a body that is not a JSON object (every POST route of vLLM 0.6.3's server takes one:
  vllm/entrypoints/openai/api_server.py:275-341), which vLLM's handlers would otherwise meet as a 500.
- 400: Qwen2-VL's special tokens anywhere in the text a user controls. vLLM's tokenizer turns their literal
  text into the real token ids (added tokens with "special": true match inside any text), and an image request
  whose text carries <|vision_start|><|video_pad|> makes vLLM 0.6.3's M-RoPE code index a video grid that is
  None (vllm/model_executor/layers/rotary_embedding.py:804-838); the engine step raises, the engine is marked
  dead (engine/multiprocessing/engine.py:225-237) and the server exits for every user until the replica has
  reloaded the model. <|im_start|>/<|im_end|> in text would forge chat turns. Every string of the body is
  checked except `stop` (stop strings match generated text and are never tokenized into the prompt), and so
  are token-id prompts of /v1/completions.
- 400: a request-supplied `chat_template` (ChatCompletionRequest.chat_template, protocol.py:238-245): a
  template can build any token, so only the model's own template is served.
- 400: more images than vLLM takes per prompt (limits.IMAGES_PER_PROMPT), before any image is decoded.
- 400: images that cannot be served (image_limits: URLs other than data:, undecodable data, sizes Qwen2-VL
  refuses, more than max_image_pixels before decoding); every other image is resized to fit the profile.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import AsyncIterable

from qwen2vl_serve.image_limits import ImageRejected, fit_request_images, image_parts
from qwen2vl_serve.limits import IMAGES_PER_PROMPT, MIB

# Qwen2-VL's special tokens: tokenizer_config.json of Qwen/Qwen2-VL-72B-Instruct-AWQ (and every Qwen2-VL
# checkpoint), "added_tokens_decoder" ids 151643-151656, each "special": true; the vision ids are also in its
# config.json (vision_start_token_id 151652, vision_end_token_id 151653, vision_token_id 151654,
# image_token_id 151655, video_token_id 151656).
SPECIAL_TOKENS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|object_ref_start|>": 151646,
    "<|object_ref_end|>": 151647,
    "<|box_start|>": 151648,
    "<|box_end|>": 151649,
    "<|quad_start|>": 151650,
    "<|quad_end|>": 151651,
    "<|vision_start|>": 151652,
    "<|vision_end|>": 151653,
    "<|vision_pad|>": 151654,
    "<|image_pad|>": 151655,
    "<|video_pad|>": 151656,
}
SPECIAL_TOKEN_NAMES = {token_id: name for name, token_id in SPECIAL_TOKENS.items()}
SPECIAL_TOKEN_TEXT = re.compile("|".join(re.escape(name) for name in SPECIAL_TOKENS))
# Top-level fields whose strings never become prompt tokens.
UNTOKENIZED_FIELDS = {"stop"}


class RequestRefused(ValueError):
    """A request the ingress answers itself; the message is for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    def body(self) -> dict:
        """vLLM's error shape (vllm/entrypoints/openai/protocol.py ErrorResponse), so clients parse one form."""
        kind = "RequestTooLargeError" if self.status == 413 else "BadRequestError"
        return {"object": "error", "message": str(self), "type": kind, "code": self.status}


@dataclass(frozen=True)
class GuardLimits:
    """The configured limits (ServerArgs.max_request_bytes, max_image_pixels)."""

    max_request_bytes: int
    # Pixels of an image as sent (its header's width x height), refused above this before decoding.
    max_image_pixels: int


def _too_large(limits: GuardLimits) -> RequestRefused:
    return RequestRefused(413, f"the request body is over {limits.max_request_bytes} bytes "
                               f"({limits.max_request_bytes / MIB:g} MiB), this endpoint's limit")


async def read_body(chunks: AsyncIterable[bytes], content_length: str | None, limits: GuardLimits) -> bytes:
    """The body from its chunks, refused (413) as soon as Content-Length or the bytes read pass the limit."""
    if content_length is not None and content_length.strip().isdigit() \
            and int(content_length) > limits.max_request_bytes:
        raise _too_large(limits)
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limits.max_request_bytes:
            raise _too_large(limits)
        parts.append(chunk)
    return b"".join(parts)


def parse_object(body: bytes) -> dict:
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise RequestRefused(400, f"the request body is not valid JSON: {error}") from None
    if not isinstance(request, dict):
        raise RequestRefused(400, f"the request body must be a JSON object, not {type(request).__name__}")
    return request


def _strings(value, path: str):
    """(path, string) for every string in a JSON value, keys included, without recursion (any depth)."""
    stack = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            yield where, item
        elif isinstance(item, dict):
            for key, inner in item.items():
                yield f"{where}.{key} (a key)", key
                stack.append((f"{where}.{key}", inner))
        elif isinstance(item, list):
            stack.extend((f"{where}[{index}]", inner) for index, inner in enumerate(item))


def check_special_tokens(request: dict) -> None:
    for field, value in request.items():
        if field in UNTOKENIZED_FIELDS:
            continue
        for where, text in _strings(value, field):
            found = SPECIAL_TOKEN_TEXT.search(text)
            if found:
                raise RequestRefused(400, f"{where} contains {found.group()}, one of Qwen2-VL's special tokens; "
                                          "this endpoint does not accept them in request text")
    prompt = request.get("prompt")
    token_lists = prompt if isinstance(prompt, list) and prompt and isinstance(prompt[0], list) else [prompt]
    for tokens in token_lists:
        for token in tokens if isinstance(tokens, list) else []:
            if isinstance(token, int) and token in SPECIAL_TOKEN_NAMES:
                raise RequestRefused(400, f"prompt contains token id {token} ({SPECIAL_TOKEN_NAMES[token]}), one of "
                                          "Qwen2-VL's special tokens; this endpoint does not accept them in prompts")


def check_request(request: dict) -> None:
    """The rules that need no image decoding: request template, special tokens, images per prompt."""
    if request.get("chat_template") is not None:
        raise RequestRefused(400, "chat_template: this endpoint serves the model's own chat template only")
    check_special_tokens(request)
    images = sum(1 for kind, _ in image_parts(request) if kind == "image_url")
    if images > IMAGES_PER_PROMPT:
        raise RequestRefused(400, f"the request has {images} images; this endpoint takes at most "
                                  f"{IMAGES_PER_PROMPT} per prompt")


def screen_body(body: bytes, limits: GuardLimits) -> bytes:
    """A POSTed body as vLLM should get it: refused (RequestRefused) or passed on, with its images fitted."""
    request = parse_object(body)
    check_request(request)
    try:
        changed = fit_request_images(request, limits.max_image_pixels)
    except ImageRejected as error:
        raise RequestRefused(400, str(error)) from None
    return json.dumps(request).encode() if changed else body
