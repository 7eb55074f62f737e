"""The ingress's refusals (images/vllm/qwen2vl_serve/request_guard.py) and its image-token bound
(limits.py, image_limits.py), as pure functions: no Ray, no vLLM."""

import ast
import asyncio
import base64
import io
import json
import math
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infra import pins
from tests.conftest import REPO_ROOT
from tests.vllm_release import release_source

sys.path.insert(0, str(REPO_ROOT / "images" / "vllm"))
from qwen2vl_serve import limits  # noqa: E402
from qwen2vl_serve.image_limits import fitted_size  # noqa: E402
from qwen2vl_serve.request_guard import (  # noqa: E402
    SPECIAL_TOKENS,
    GuardLimits,
    RequestRefused,
    check_request,
    parse_object,
    read_body,
    screen_body,
)

SERVING_PYTHON = REPO_ROOT / ".venv-serving" / "bin" / "python"
LIMITS = GuardLimits(max_request_bytes=1000, max_image_pixels=50 * limits.MEGAPIXEL)
TINY_PNG = "data:image/png;base64,AAAA"  # never decoded by the rules that need no image


def chat(*content, role="user"):
    return {"model": "qwen2vl", "messages": [{"role": role, "content": list(content)}]}


def image(url=TINY_PNG):
    return {"type": "image_url", "image_url": {"url": url}}


def text(words):
    return {"type": "text", "text": words}


def refusal(request) -> RequestRefused:
    with pytest.raises(RequestRefused) as refused:
        check_request(request)
    return refused.value


def test_the_engine_crashing_request_is_refused():
    """An image beside "<|vision_start|><|video_pad|>" text makes vLLM 0.6.3's M-RoPE code raise inside the
    engine step, which kills the engine for every user."""
    refused = refusal(chat(image(), text("what is this <|vision_start|><|video_pad|> thing")))
    assert refused.status == 400 and "<|vision_start|>" in str(refused)


# Every place a user's text reaches the prompt in vLLM 0.6.3's OpenAI server (protocol.py): chat content as a
# string or as text parts, any role, a custom role's name, /v1/completions and /tokenize prompts (a string or a
# list of them), /tokenize messages, and the template's kwargs.
PLACES = {
    "user text part": lambda t: chat(text(f"a {t} b")),
    "system string": lambda t: {"messages": [{"role": "system", "content": f"x{t}"}, {"role": "user", "content": "hi"}]},
    "assistant string": lambda t: {"messages": [{"role": "assistant", "content": t}]},
    "tool string": lambda t: {"messages": [{"role": "tool", "content": t, "tool_call_id": "1"}]},
    "custom role": lambda t: {"messages": [{"role": f"user{t}", "content": "hi"}]},
    "message name": lambda t: {"messages": [{"role": "user", "name": t, "content": "hi"}]},
    "completion prompt": lambda t: {"model": "qwen2vl", "prompt": f"say {t}"},
    "completion prompt list": lambda t: {"model": "qwen2vl", "prompt": ["fine", f"say {t}"]},
    "tokenize prompt": lambda t: {"model": "qwen2vl", "prompt": t},
    "chat_template_kwargs": lambda t: {**chat(text("hi")), "chat_template_kwargs": {"system": t}},
}


@pytest.mark.parametrize("place", sorted(PLACES))
def test_special_tokens_are_refused_wherever_user_text_goes(place):
    for token in SPECIAL_TOKENS:
        refused = refusal(PLACES[place](token))
        assert refused.status == 400 and token in str(refused), (place, token)


def test_the_refused_tokens_are_qwen2_vl_special_family():
    vision = {"<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"}
    chat_turns = {"<|im_start|>", "<|im_end|>", "<|endoftext|>"}
    assert vision | chat_turns <= set(SPECIAL_TOKENS)
    assert sorted(SPECIAL_TOKENS.values()) == list(range(151643, 151657))


def test_token_id_prompts_with_special_ids_are_refused():
    assert "151656" in str(refusal({"prompt": [1, 2, 151656]}))
    assert "<|vision_start|>" in str(refusal({"prompt": [[5], [151652, 3]]}))
    check_request({"prompt": [[5, 6], [7]]})


def test_ordinary_requests_and_stop_strings_pass():
    check_request(chat(image(), text("What colour is the left half? <|not a token|> <im_start>")))
    check_request({**chat(text("hi")), "stop": ["<|im_end|>", "<|endoftext|>"]})


def test_a_request_chat_template_is_refused():
    refused = refusal({**chat(text("hi")), "chat_template": "{{ '<|vision' ~ '_start|>' }}"})
    assert refused.status == 400 and "chat_template" in str(refused)


def test_more_images_than_vllm_takes_are_refused_before_any_is_decoded():
    assert limits.IMAGES_PER_PROMPT == 1  # vLLM 0.6.3's default (chat_utils.py:204); the server passes no flag
    two_turns = {"messages": [{"role": "user", "content": [image(), text("and")]},
                              {"role": "user", "content": [image()]}]}
    for request in (chat(image(), image(), text("compare")), two_turns):
        body = json.dumps(request).encode()
        with pytest.raises(RequestRefused) as refused:
            screen_body(body, LIMITS)  # the images are undecodable: the count is judged first
        assert refused.value.status == 400 and "2 images" in str(refused.value)


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe", b"[" * 100000, b"null"])
def test_a_body_that_is_not_a_json_object_is_a_400(body):
    with pytest.raises(RequestRefused) as refused:
        parse_object(body)
    assert refused.value.status == 400


def test_odd_shapes_inside_an_object_do_not_raise_anything_but_refusals():
    for request in ({"messages": 5}, {"messages": "text"}, {"messages": [5, None, {"content": 7}]},
                    {"prompt": None}, {"prompt": [[]]}, {"chat_template": None}):
        check_request(request)


async def _chunks(parts, taken):
    for part in parts:
        taken.append(part)
        yield part


def read(parts, content_length):
    taken = []
    # A loop of its own, not asyncio.run, which leaves the thread without a current loop for later tests.
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(read_body(_chunks(parts, taken), content_length, LIMITS)), len(taken)
    except RequestRefused as refused:
        return refused, len(taken)
    finally:
        loop.close()


def test_a_body_over_the_limit_is_a_413_by_content_length_before_reading():
    refused, taken = read([b"x" * 600, b"x" * 600], "1200")
    assert refused.status == 413 and taken == 0 and "1000 bytes" in str(refused)


def test_a_body_over_the_limit_is_a_413_while_reading_without_content_length():
    refused, taken = read([b"x" * 400] * 10, None)
    assert isinstance(refused, RequestRefused) and refused.status == 413 and taken == 3


def test_a_body_at_the_limit_is_read_whole():
    assert read([b"x" * 500, b"x" * 500], "1000") == (b"x" * 1000, 2)


def test_the_profiled_image_is_1225_tokens():
    """vLLM 0.6.3 profiles a 9999999 x 9999999 image with max_pixels 1280 x 28 x 28 (qwen2_vl.py:636-647):
    sqrt(1003520) = 1001.8 pixels a side, taken down to 35 cells of 28."""
    assert limits.MAX_IMAGE_TOKENS == limits.profiled_image_tokens() == 35 * 35


def test_the_token_arithmetic_gives_what_the_processor_gave_on_real_sizes():
    """Counts measured with transformers 4.46.1's smart_resize on the sizes the ingress used to send, and the
    small-image branch (a 64 x 64 image is 2 x 2 cells; a 30 x 30 one is grown to min_pixels)."""
    measured = {(1156, 867): 1271, (1335, 751): 1296, (6335, 158): 1356, (14134, 71): 1515, (64, 64): 4,
                (30, 30): 4}
    assert {size: limits.image_tokens(*size) for size in measured} == measured


@pytest.mark.download
def test_the_token_arithmetic_is_the_pinned_processors():
    """limits.image_tokens against smart_resize itself, read from the transformers wheel the image pins
    (models/qwen2_vl/image_processing_qwen2_vl.py), over sizes across all three of its branches."""
    version = next(c.split("==")[1] for c in pins.IMAGE_CONSTRAINTS if c.startswith("transformers=="))
    source = release_source("transformers", version, "transformers/models/qwen2_vl/image_processing_qwen2_vl.py")
    node = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == "smart_resize")
    scope = {"math": math}
    exec(compile(ast.Module([node], []), "smart_resize", "exec"), scope)

    def processor_tokens(width, height, **bounds):
        h, w = scope["smart_resize"](height, width, factor=28, **bounds)
        return (h // 28) * (w // 28)

    checkpoint = {"min_pixels": limits.CHECKPOINT_MIN_PIXELS, "max_pixels": limits.CHECKPOINT_MAX_PIXELS}
    sizes = [(w, h) for w in range(28, 5000, 97) for h in range(28, 5000, 89) if max(w, h) / min(w, h) <= 200]
    sizes += [(14134, 71), (6335, 158), (1335, 751), (30, 30), (4032, 3024), (20000, 15000), (9999999, 9999999)]
    for width, height in sizes:
        assert limits.image_tokens(width, height) == processor_tokens(width, height, **checkpoint), (width, height)
    profile = {"min_pixels": max(limits.CHECKPOINT_MIN_PIXELS, 784),
               "max_pixels": min(limits.CHECKPOINT_MAX_PIXELS, limits.PROFILE_MAX_PIXELS)}
    assert limits.MAX_IMAGE_TOKENS == processor_tokens(9999999, 9999999, **profile)


@pytest.mark.parametrize("size", [(4000, 3000), (1920, 1080), (12000, 300), (14134, 71), (3000, 4000), (71, 14134)])
def test_fitted_images_stay_within_the_profiled_tokens(size):
    width, height = fitted_size(*size)
    assert limits.image_tokens(width, height) <= limits.MAX_IMAGE_TOKENS
    assert abs(math.log((width / height) / (size[0] / size[1]))) < 0.01  # aspect kept


@settings(max_examples=300, deadline=None)
@given(short=st.integers(28, 6000), aspect=st.floats(1.0, 200.0), landscape=st.booleans())
def test_every_image_qwen2_vl_takes_is_fitted_within_the_profiled_tokens(short, aspect, landscape):
    long = min(int(short * aspect), 200 * short)
    width, height = (long, short) if landscape else (short, long)
    fitted = fitted_size(width, height)
    assert limits.image_tokens(*fitted) <= limits.MAX_IMAGE_TOKENS
    if limits.image_tokens(width, height) <= limits.MAX_IMAGE_TOKENS and width * height <= limits.MAX_IMAGE_PIXELS:
        assert fitted == (width, height)  # images that fit are sent as they are
    else:  # and the rest are not shrunk far below the bound, but where the short side has under 4 cells and
        # rounding away one of them costs more than a quarter
        assert limits.image_tokens(*fitted) > 0.75 * limits.MAX_IMAGE_TOKENS or min(fitted) < 4 * limits.TOKEN_SIDE


def test_sizes_qwen2_vl_refuses_are_refused():
    for size in ((27, 500), (100, 20001)):
        with pytest.raises(ValueError, match="Qwen2-VL cannot take"):
            fitted_size(*size)


DECODING = textwrap.dedent("""
    import base64, io, json, sys
    sys.path.insert(0, "images/vllm")
    from PIL import Image
    from qwen2vl_serve.limits import MEGAPIXEL, image_tokens
    from qwen2vl_serve.request_guard import GuardLimits, RequestRefused, screen_body

    guard = GuardLimits(max_request_bytes=20 * 2**20, max_image_pixels=50 * MEGAPIXEL)

    def body(width, height, kind="PNG"):
        out = io.BytesIO()
        Image.new("RGB", (width, height), (200, 30, 30)).save(out, kind)
        url = f"data:image/{kind.lower()};base64," + base64.b64encode(out.getvalue()).decode()
        return json.dumps({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "what colour"}, {"type": "image_url", "image_url": {"url": url}}]}]}).encode()

    def outcome(data):
        try:
            sent = json.loads(screen_body(data, guard))
        except RequestRefused as refused:
            return [refused.status, str(refused)]
        url = sent["messages"][0]["content"][1]["image_url"]["url"]
        image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        return [image.size, image.format, image_tokens(*image.size)]

    small = body(64, 64)
    print(json.dumps({"bomb": outcome(body(10000, 6000)), "hd": outcome(body(1920, 1080, "JPEG")),
                      "wide": outcome(body(14134, 71)), "small_unchanged": screen_body(small, guard) == small,
                      "thin": outcome(body(20, 400))}))
""")


def test_images_are_decoded_within_bounds_and_sent_within_the_profiled_tokens():
    """With Pillow (the serving environment's): a 60-megapixel image is refused from its header, and images
    are sent at a size whose real token count is within the profile."""
    if not SERVING_PYTHON.exists():
        pytest.fail("the serving virtualenv is missing: run `make install-serving` (make test does)")
    proc = subprocess.run([str(SERVING_PYTHON), "-c", DECODING], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["bomb"][0] == 400 and "10000 x 6000" in result["bomb"][1] and "50 megapixels" in result["bomb"][1]
    for name in ("hd", "wide"):
        size, _, tokens = result[name]
        assert tokens <= limits.MAX_IMAGE_TOKENS and list(fitted_size(*{"hd": (1920, 1080), "wide": (14134, 71)}[name])) == size
    assert result["hd"][1] == "JPEG"
    assert result["small_unchanged"]
    assert result["thin"][0] == 400 and "Qwen2-VL cannot take" in result["thin"][1]
