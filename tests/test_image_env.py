"""The image environment (.venv-image, docs/testing.md): the image lock's own packages without the engine,
and every module of ours that the image runs importing there, on the image's Ray and web stack."""

import json
import os
import subprocess

import pytest

from infra import pins
from scripts.image_env import LEFT_OUT, image_env_requirements, left_out
from scripts.lock import parse_lock
from tests.conftest import REPO_ROOT

LOCK = REPO_ROOT / "images" / "vllm" / "requirements.lock"
IMAGE_PYTHON = REPO_ROOT / ".venv-image" / "bin" / "python"


def test_the_image_env_is_the_image_lock_less_the_engine_and_its_gpu_packages():
    full = {pin.name: pin for pin in parse_lock(LOCK.read_text())}
    kept = {pin.name: pin for pin in parse_lock(image_env_requirements(LOCK.read_text()))}
    assert set(full) - set(kept) == {name for name in full if left_out(name)}
    assert all(kept[name] == full[name] for name in kept), "a kept package's version or hashes changed"
    # The engine and its GPU runtime go; Ray and the web stack stay, at the image's versions.
    assert set(LEFT_OUT) <= set(full) and any(name.startswith("nvidia-cublas") for name in set(full) - set(kept))
    assert kept["ray"].version == pins.RAY_VERSION
    assert {"fastapi", "starlette", "uvicorn", "pydantic", "aiohttp", "pillow", "pyarrow", "numpy",
            "transformers", "nvidia-ml-py"} <= set(kept)


# Every module of qwen2vl_serve, then the parts of Ray that run in the image: Serve's controller, proxy and
# replica, the dashboard's Serve REST API (the path KubeRay PUTs to) and Ray's serializer, which loads pyarrow.
IMPORTS = """
import importlib, json, pkgutil, sys
import qwen2vl_serve
ours = sorted(m.name for m in pkgutil.iter_modules(qwen2vl_serve.__path__, "qwen2vl_serve."))
for name in ours:
    importlib.import_module(name)
ray_paths = ["ray.serve._private.controller", "ray.serve._private.proxy", "ray.serve._private.replica",
             "ray.dashboard.modules.serve.serve_rest_api_impl", "ray._private.serialization", "pyarrow"]
for name in ray_paths:
    importlib.import_module(name)
import fastapi, numpy, pyarrow, pydantic, ray, starlette, transformers, uvicorn
print(json.dumps({"ours": ours, "versions": {m.__name__: m.__version__ for m in
                  (fastapi, numpy, pyarrow, pydantic, ray, starlette, transformers, uvicorn)}}))
"""


@pytest.mark.server
def test_every_module_the_image_runs_imports_on_the_image_stack():
    if not IMAGE_PYTHON.exists():
        pytest.fail("the image environment is missing: run `make install-image-env` (make test does)")
    proc = subprocess.run([str(IMAGE_PYTHON), "-c", IMPORTS], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "images" / "vllm")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    modules = {path.stem for path in (REPO_ROOT / "images" / "vllm" / "qwen2vl_serve").glob("*.py")} - {"__init__"}
    assert result["ours"] == sorted(f"qwen2vl_serve.{name}" for name in modules)
    locked = {pin.name: pin.version for pin in parse_lock(LOCK.read_text())}
    assert result["versions"] == {name: locked[name] for name in result["versions"]}, "not the image's versions"
