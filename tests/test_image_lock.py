"""The serving image's build is hash-checked end to end, build tools included, and the baked model
belongs to the user that serves it."""

import os
import re
import subprocess
import sys

import pytest
from packaging.requirements import Requirement

from infra import pins
from infra.image_build import DOCKERFILE
from infra.workload.spec import BAKED_MODEL_PATH
from scripts import lock_image
from scripts.lock import normalise, parse_lock
from tests.conftest import REPO_ROOT

IMAGE_DIR = REPO_ROOT / "images" / "vllm"
BUILD_LOCK = IMAGE_DIR / "build-requirements.lock"
LOCK = IMAGE_DIR / "requirements.lock"


def pip_installs() -> list[str]:
    """The Dockerfile's `pip install` commands, in order."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    return [" ".join(part.split()) for part in re.split(r"&&|\n", text) if "pip install" in part]


def test_build_tools_are_hash_locked_and_installed_before_the_lock():
    installs = pip_installs()
    assert installs[0].endswith("--require-hashes --no-deps -r /opt/qwen2vl/build-requirements.lock"), installs
    assert "--no-build-isolation" in installs[1] and "--require-hashes" in installs[1], installs
    assert installs[1].endswith("-r /opt/qwen2vl/requirements.lock"), installs
    tools = {pin.name: pin for pin in parse_lock(BUILD_LOCK.read_text())}
    assert {"setuptools", "wheel"} <= set(tools) and all(pin.hashes for pin in tools.values())


def test_baked_model_is_chowned_where_it_is_fetched():
    bake = next(step for step in DOCKERFILE.read_text().split("\nRUN ") if "model_files fetch" in step)
    assert '--dir "${MODEL_DIR}"' in bake
    # MODEL_DIR is under BAKED_MODEL_PATH when baked (infra/workload/spec.py), not under /models.
    assert re.findall(r"chown -R (\S+) (\S+)", bake) == [("serve:serve", '"${MODEL_DIR}";')]
    assert BAKED_MODEL_PATH != "/models"


def pip(venv, *args, **kwargs):
    # The machine's pip configuration (extra indexes, local wheel folders) stays out of it: PyPI only.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return subprocess.run([str(venv / "bin" / "python"), "-m", "pip", *args, "--disable-pip-version-check"],
                          env={**env, "PIP_CONFIG_FILE": os.devnull}, capture_output=True, text=True, timeout=600,
                          **kwargs)


@pytest.mark.download
def test_sdist_only_package_builds_from_the_hashed_build_tools_alone(tmp_path):
    """The Dockerfile's two pip steps on the lock's sdist-only package: with the locked build tools installed
    and build isolation off, it builds with no index at all (so nothing unhashed is fetched); with build
    isolation on (the old Dockerfile), pip needs an index to fill the build environment."""
    sdist_only = [pin for pin in parse_lock(LOCK.read_text()) if pin.name == "pyairports"]
    assert len(sdist_only) == 1 and len(sdist_only[0].hashes) == 1  # one file on the index: the sdist
    pin = sdist_only[0]
    requirement = tmp_path / "sdist-only.txt"
    requirement.write_text(f"{pin.name}=={pin.version} --hash=sha256:{pin.hashes[0]}\n")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    tools = pip(venv, "install", "--require-hashes", "--no-deps", "-r", str(BUILD_LOCK))
    assert tools.returncode == 0, tools.stderr
    sdists = tmp_path / "sdists"
    fetched = pip(venv, "download", "--no-deps", "--no-build-isolation", "--require-hashes", "-d", str(sdists),
                  "-r", str(requirement))
    assert fetched.returncode == 0, fetched.stderr
    offline = ("--no-index", "--find-links", str(sdists), "--require-hashes", "--no-deps", "-r", str(requirement))
    isolated = pip(venv, "install", *offline)
    assert isolated.returncode != 0 and "setuptools" in isolated.stderr, isolated.stderr
    built = pip(venv, "install", "--no-build-isolation", *offline)
    assert built.returncode == 0, built.stderr


def test_image_lock_keeps_the_bounds_metadata_does_not_state():
    """pyarrow 26 beside numpy 1.26 stopped Ray 2.38's Serve controller at import; the bounds in
    pins.IMAGE_CONSTRAINTS hold in the lock."""
    locked = {pin.name: pin.version for pin in parse_lock(LOCK.read_text())}
    for constraint in pins.IMAGE_CONSTRAINTS:
        requirement = Requirement(constraint)
        version = locked.get(normalise(requirement.name))
        assert version is not None and requirement.specifier.contains(version, prereleases=True), \
            f"{requirement.name} {version} is locked, pins.IMAGE_CONSTRAINTS asks {requirement.specifier}"


def test_image_lock_records_the_era_it_was_resolved_for():
    first_line = LOCK.read_text().splitlines()[0]
    assert first_line == lock_image.header().strip()
    assert f"--exclude-newer {pins.IMAGE_LOCK_EXCLUDE_NEWER}" in first_line
    for name, cutoff in pins.IMAGE_LOCK_LATE_PACKAGES.items():
        assert f"--exclude-newer-package {name}={cutoff}" in first_line
        assert cutoff > pins.IMAGE_LOCK_EXCLUDE_NEWER  # an exception only ever widens the cut-off


@pytest.mark.download
def test_image_lock_is_what_the_resolver_gives_for_the_engines_era(tmp_path):
    """The era rule itself: resolved again with only what the index held at the cut-off (uv filters every
    file by its upload time, the late packages by theirs), the same versions and hashes come out. A lock
    holding anything uploaded after the cut-off cannot be reproduced this way."""
    uv = REPO_ROOT / ".cache" / "bootstrap" / "bin" / "uv"
    if not uv.exists():
        pytest.fail(f"{uv} is missing: `make install` installs it")
    fresh = tmp_path / "requirements.lock"
    lock_image.compile_lock(str(uv), lock_image.requirements(), fresh, lock_image.era_options())
    assert parse_lock(fresh.read_text()) == parse_lock(LOCK.read_text())
