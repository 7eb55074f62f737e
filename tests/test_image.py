"""The serving image: the Dockerfile takes exactly the pinned build args, passes hadolint and checkov,
and the workload runs the pushed image by digest."""

import json
import re
import subprocess

import pytest

from infra import outputs as output_names
from infra import pins
from infra.config import ConfigError
from infra.image_build import CONTEXT_INPUTS, DOCKERFILE, IMAGE_NAME, build_args, content_tag
from infra.workload.spec import model_dir_for
from tests.conftest import REPO_ROOT, make_config

TOOLS = REPO_ROOT / ".venv-tools" / "bin"


def dockerfile_args():
    return re.findall(r"^ARG ([A-Z_]+)", DOCKERFILE.read_text(), re.M)


def test_dockerfile_takes_exactly_the_build_args_the_program_passes():
    cfg = make_config()
    assert sorted(dockerfile_args()) == sorted(build_args(cfg, model_dir_for(cfg)))
    text = DOCKERFILE.read_text()
    assert "FROM ${CUDA_BASE_IMAGE}" in text
    for arg in ("VLLM_VERSION", "RAY_VERSION", "CUDA_VERSION", "MODEL_REPO", "MODEL_REVISION"):
        assert re.search(rf'LABEL .*"\${{{arg}}}"', text, re.S), arg
    assert "USER 10001" in text and "--require-hashes" in text


def test_build_args_are_the_pins():
    cfg = make_config()
    args = build_args(cfg, model_dir_for(cfg))
    assert (args["VLLM_VERSION"], args["RAY_VERSION"], args["CUDA_VERSION"], args["CUDA_BASE_IMAGE"]) == (
        pins.VLLM_VERSION, pins.RAY_VERSION, pins.CUDA_VERSION, pins.CUDA_BASE_IMAGE)


def test_the_build_context_holds_what_the_dockerfile_copies():
    ignore = (REPO_ROOT / ".dockerignore").read_text().split()
    allowed = {line[1:] for line in ignore if line.startswith("!")}
    copied = {m for m in re.findall(r"^COPY (\S+) ", DOCKERFILE.read_text(), re.M)}
    assert copied <= allowed and allowed <= set(CONTEXT_INPUTS) - {"images/vllm/Dockerfile"}


def test_content_tag_changes_with_what_goes_into_the_image():
    base = make_config()
    assert content_tag(base, model_dir_for(base)) == content_tag(make_config(), model_dir_for(base))
    baked = make_config(modelStorage="image")
    assert content_tag(baked, model_dir_for(baked)) != content_tag(base, model_dir_for(base))


def test_hadolint_passes():
    if not (TOOLS / "hadolint").exists():
        pytest.fail("hadolint is not installed: run `make install`")
    proc = subprocess.run([str(TOOLS / "hadolint"), str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_checkov_passes_on_the_dockerfile():
    proc = subprocess.run([str(TOOLS / "checkov"), "-f", str(DOCKERFILE), "--framework", "dockerfile", "--output",
                           "json", "--skip-download"], capture_output=True, text=True, timeout=300)
    report = json.loads(proc.stdout)
    assert report["summary"]["failed"] == 0 and report["summary"]["passed"] > 20
    for skipped in report["results"]["skipped_checks"]:
        assert len(skipped["check_result"].get("suppress_comment", "")) > 20


@pytest.mark.parametrize("stack", ["eval", "staging", "local"])
def test_workload_runs_the_pushed_image_by_digest(plan_of, stack):
    result = plan_of(stack)
    pushed = result.outputs[output_names.IMAGE]
    assert re.fullmatch(r".+:[0-9a-z.]+-[0-9a-f]{12}@sha256:[0-9a-f]{64}", pushed)
    images = {c["image"] for r in result.resources if r.type == "kubernetes:ray.io/v1:RayService"
              for group in [r.inputs["spec"]["rayClusterConfig"]["headGroupSpec"],
                            *r.inputs["spec"]["rayClusterConfig"]["workerGroupSpecs"]]
              for c in group["template"]["spec"]["containers"]}
    assert images == {pushed}
    build = next(r for r in result.resources if r.type == "docker-build:index:Image" and r.name == IMAGE_NAME)
    assert build.inputs["push"] is True and build.inputs["buildOnPreview"] is False
    assert build.inputs["buildArgs"]["VLLM_VERSION"] == pins.VLLM_VERSION


def test_registry_per_cloud(plan_of):
    types = lambda stack: {r.type for r in plan_of(stack).resources}  # noqa: E731
    assert "aws:ecr/repository:Repository" in types("eval")
    assert "gcp:artifactregistry/repository:Repository" in types("staging")
    assert plan_of("local").outputs[output_names.IMAGE].startswith("localhost:5001/ml/qwen2vl-vllm:")


def test_image_config_errors():
    with pytest.raises(ConfigError, match="locked to vLLM"):
        make_config(vllmVersion="0.7.3")
    assert make_config(vllmVersion="0.7.3", image="registry.example.com/x:1").vllm_version == "0.7.3"
    from infra.config import parse_stack_config

    with pytest.raises(ConfigError, match="qwen2vl:registry"):
        parse_stack_config({"cloud": "existing"}, "t")
