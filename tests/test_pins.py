"""infra/pins.py is the one place for versions and pins: no other file spells them out."""

import io
import re
import subprocess
import sys
import tokenize

import pytest

from infra import pins
from tests.conftest import REPO_ROOT

# Prose may name versions; generated manifests carry them from pins (render --check keeps them in sync);
# vendored upstream excerpts name the tag they were taken at.
EXEMPT_PREFIXES = ("docs/", "manifests/", "README.md", "requirements/", "tests/upstream/")
# The model catalog records facts about several repositories and their revisions, the pinned ones among them.
# infra/placement/charts.yaml records the chart version its facts were read from; infra/placement/charts.py
# refuses to run when that differs from the pin, so a chart bump forces a re-read of its defaults.
EXEMPT_VALUES = {("infra/catalog/models.yaml", pins.MODEL_REPO), ("infra/catalog/models.yaml", pins.MODEL_REVISION), ("infra/catalog/performance.yaml", pins.MODEL_REPO)} | {
    ("infra/placement/charts.yaml", version) for version in (
        pins.NVIDIA_DEVICE_PLUGIN_CHART_VERSION, pins.KUBERAY_OPERATOR_CHART_VERSION, pins.CLUSTER_AUTOSCALER_CHART_VERSION,
        pins.KUBE_PROMETHEUS_STACK_CHART_VERSION)}
# The model lock records the pin it resolves; test_model_lock_is_for_the_pinned_model keeps them equal.
# The image's requirements lock is generated from the pins; test_image_lock_matches_the_pins checks it.
# The other lock files are generated from package indexes: their versions and hashes are not our pins.
EXEMPT_FILES = ("infra/model.lock.json", "images/vllm/requirements.lock", "images/vllm/build-requirements.lock")

PINNED = {
    name: value
    for name, value in vars(pins).items()
    if name.endswith(("_VERSION", "_IMAGE", "_REVISION", "_REPO")) and len(value) >= 5
}
# Short versions only count where they are used as a CUDA or Python version.
SHORT_PATTERNS = {
    "CUDA_VERSION": re.compile(r"(cuda[-_ ]?|cu)" + re.escape(pins.CUDA_VERSION).replace(r"\.", r"\.?") + r"\b", re.I),
    # The image's Python ("python 3.11", "PYTHON_VERSION=3.11"); the host interpreter (python3.11) is not a pin.
    "PYTHON_VERSION": re.compile(r"python(_version)?[-_ =]" + re.escape(pins.PYTHON_VERSION) + r"\b", re.I),
}


def code_of(name: str, text: str) -> str:
    """A Python file without its comments and docstrings: a citation such as "pod.go at v1.4.2" names the
    source that was read, it does not set a version. Other files are searched whole."""
    if not name.endswith(".py"):
        return text
    kept, statement_start = [], True
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT or (token.type == tokenize.STRING and statement_start):
            continue
        kept.append(token.string)
        statement_start = token.type in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.NL)
    return " ".join(kept)


def tracked_files():
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    for name in listed:
        path = REPO_ROOT / name
        if name in ("infra/pins.py", "tests/test_pins.py", *EXEMPT_FILES) or name.startswith(EXEMPT_PREFIXES) or not path.is_file():
            continue
        try:
            yield name, code_of(name, path.read_text())
        except UnicodeDecodeError:
            continue


def test_pins_are_found_by_this_test():
    assert PINNED["VLLM_VERSION"] == pins.VLLM_VERSION and len(PINNED) >= 8


@pytest.mark.parametrize("name", sorted(PINNED))
def test_pin_is_not_repeated(name):
    value = PINNED[name]
    offenders = [f for f, text in tracked_files() if value in text and (f, value) not in EXEMPT_VALUES]
    assert not offenders, f"{name} = {value!r} is repeated in {offenders}; import it from infra.pins"


@pytest.mark.parametrize("name", sorted(SHORT_PATTERNS))
def test_short_version_is_not_repeated(name):
    offenders = [f for f, text in tracked_files() if SHORT_PATTERNS[name].search(text)]
    assert not offenders, f"{name} is repeated in {offenders}; import it from infra.pins"


def test_model_lock_is_for_the_pinned_model():
    from infra.model_lock import load_lock

    lock = load_lock()
    assert lock["repo"] == pins.MODEL_REPO
    assert lock["revision"] == pins.MODEL_REVISION or (lock["commit"] or "").startswith(pins.MODEL_REVISION)


def test_image_lock_matches_the_pins():
    proc = subprocess.run([sys.executable, "scripts/lock_image.py", "--check"], cwd=REPO_ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr


def test_cuda_base_image_is_pinned_by_digest_and_carries_no_unused_cudnn():
    # NVIDIA deletes end-of-life tags; a digest keeps naming the same bytes (or fails the pull).
    assert re.fullmatch(r"nvidia/cuda:[\w.-]+@sha256:[0-9a-f]{64}", pins.CUDA_BASE_IMAGE), pins.CUDA_BASE_IMAGE
    # torch brings its own cuDNN as a pip wheel, so a cuDNN base image would be dead weight.
    assert "cudnn" not in pins.CUDA_BASE_IMAGE
    lock = (REPO_ROOT / "images" / "vllm" / "requirements.lock").read_text()
    assert re.search(r"^nvidia-cudnn-cu12==\S+ \\(?:\n\s+--hash=\S+(?: \\)?)+\n\s+# via torch", lock, re.M)
