"""The hash-locked requirements files agree with pyproject.toml, and `make` installs from them.

Reachability is read from the real metadata of the packages installed in this virtualenv (which
`make install-test` installed from test.lock), not from the lock's own "# via" comments."""

import importlib.metadata
import shutil
import subprocess
import tomllib

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement

from scripts.lock import LOCK_DIR, PLAN_EXTRAS, TEST_EXTRAS, normalise, parse_lock
from tests.conftest import REPO_ROOT

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
# The lock is universal: the platforms and Pythons a locked marker may select, besides this one.
OTHER_ENVIRONMENTS = [
    {"sys_platform": platform, "platform_system": system, "os_name": os_name, "platform_machine": machine,
     "python_version": python, "python_full_version": f"{python}.0", "implementation_name": "cpython"}
    for platform, system, os_name in (("linux", "Linux", "posix"), ("darwin", "Darwin", "posix"),
                                      ("win32", "Windows", "nt"), ("emscripten", "Emscripten", "posix"))
    for machine in ("x86_64", "aarch64", "arm64", "AMD64")
    for python in ("3.11", "3.12")
]


def lock(name: str):
    return parse_lock((LOCK_DIR / name).read_text())


def project_requirements(extras: tuple[str, ...]) -> list[Requirement]:
    listed = PYPROJECT["project"]["dependencies"] + PYPROJECT["build-system"]["requires"]
    for extra in extras:
        listed += PYPROJECT["project"]["optional-dependencies"][extra]
    return [Requirement(text) for text in listed]


def applies_somewhere(requirement: Requirement, extras: set[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**default_environment(), **env, "extra": extra})
               for env in [{}, *OTHER_ENVIRONMENTS] for extra in extras | {""})


def reached_names(extras: tuple[str, ...]) -> set[str]:
    """Every package the project's requirements reach, through the installed packages' own metadata."""
    reached: set[str] = set()
    todo = [(req, set()) for req in project_requirements(extras)]
    while todo:
        requirement, wanted_extras = todo.pop()
        name = normalise(requirement.name)
        if not applies_somewhere(requirement, wanted_extras):
            continue
        key_extras = set(requirement.extras)
        if name in reached and not key_extras:
            continue
        reached.add(name)
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue  # only for another platform (its marker does not select this one): nothing below it here
        todo += [(Requirement(text), key_extras) for text in requires]
    return reached


@pytest.mark.parametrize("name, extras", [("plan.lock", PLAN_EXTRAS), ("test.lock", TEST_EXTRAS)])
def test_every_pyproject_requirement_is_satisfied_by_the_locked_version(name, extras):
    pins = lock(name)
    for requirement in project_requirements(extras):
        versions = [pin.version for pin in pins if pin.name == normalise(requirement.name)]
        assert versions, f"{requirement} (pyproject.toml) is not in requirements/{name}: run `make lock`"
        for version in versions:
            assert requirement.specifier.contains(version, prereleases=True), (
                f"requirements/{name} pins {requirement.name}=={version}, outside {requirement} in pyproject.toml: "
                "run `make lock`")


@pytest.mark.parametrize("name, extras", [("plan.lock", PLAN_EXTRAS), ("test.lock", TEST_EXTRAS)])
def test_the_lock_lists_nothing_pyproject_does_not_reach(name, extras):
    unreached = {pin.name for pin in lock(name)} - reached_names(extras)
    assert not unreached, f"requirements/{name} pins packages pyproject.toml does not need: {sorted(unreached)}"


def test_plan_lock_is_the_test_lock_without_the_test_extra():
    plan = {pin.name: pin for pin in lock("plan.lock")}
    test = {pin.name: pin for pin in lock("test.lock")}
    for name, pin in plan.items():
        assert (test[name].version, test[name].hashes) == (pin.version, pin.hashes), name
    only_for_tests = reached_names(TEST_EXTRAS) - reached_names(PLAN_EXTRAS)
    assert set(test) - set(plan) == only_for_tests


@pytest.mark.parametrize("name", ["plan.lock", "test.lock", "tools.lock", "bootstrap.lock"])
def test_every_locked_package_carries_hashes(name):
    pins = lock(name)
    assert pins, f"requirements/{name} pins nothing"
    unhashed = [pin.name for pin in pins if not pin.hashes]
    assert not unhashed, f"requirements/{name}: no hash for {unhashed}; pip --require-hashes would refuse them"


def test_this_virtualenv_holds_the_locked_versions():
    """`make install-test` installed test.lock here: what is installed is what is locked."""
    environment = default_environment()
    wrong = {}
    for pin in lock("test.lock"):
        if pin.marker and not Requirement(f"{pin.name}; {pin.marker}").marker.evaluate(environment):
            continue
        try:
            installed = importlib.metadata.version(pin.name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != pin.version:
            wrong[pin.name] = (installed, pin.version)
    assert not wrong, f"installed vs locked: {wrong}; run `make install-test`"


def dry_run(target: str, tmp_path) -> str:
    """The commands `make TARGET` runs in a fresh clone (make's own dry run; nothing is installed)."""
    for item in ("Makefile", "pyproject.toml", "scripts/image_env.py", "images/vllm/requirements.lock",
                 "images/vllm/build-requirements.lock"):
        (tmp_path / item).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / item, tmp_path / item)
    shutil.copytree(LOCK_DIR, tmp_path / LOCK_DIR.name)
    proc = subprocess.run(["make", "-n", target], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_make_plan_installs_only_what_the_plan_needs(tmp_path):
    commands = dry_run("plan", tmp_path)
    assert "requirements/plan.lock" in commands and "--require-hashes" in commands
    for not_for_the_plan in ("test.lock", "tools.lock", ".venv-tools", ".venv-serving", "vllm", "checkov"):
        assert not_for_the_plan not in commands, not_for_the_plan


def test_make_test_installs_everything(tmp_path):
    commands = dry_run("test", tmp_path)
    for needed in ("requirements/test.lock", "requirements/tools.lock", ".venv-serving", "scripts/test_groups.py",
                   # the image environment: the image lock filtered, installed with its hashes
                   "scripts/image_env.py .venv-image/requirements.txt", ".venv-image/requirements.txt"):
        assert needed in commands, needed


def test_every_virtualenv_install_goes_through_the_locks_or_pins(tmp_path):
    """No unpinned `pip install NAME` in the recipes: each installs a lock file, the project itself
    (editable, no dependencies) or the serving virtualenv's exact versions."""
    commands = dry_run("test", tmp_path).replace("\\\n", " ")
    installs = [part for line in commands.splitlines() for part in line.split(";") if " install " in part]
    for command in installs:
        assert ("--require-hashes" in command or "--no-deps" in command or "==" in command
                or "--upgrade pip" in command), command


def test_lock_script_names_uv_the_makefile_bootstraps():
    makefile = (REPO_ROOT / "Makefile").read_text()
    version = next(line.split(":=")[1].strip() for line in makefile.splitlines() if line.startswith("UV_VERSION"))
    assert [(pin.name, pin.version) for pin in lock("bootstrap.lock")] == [("uv", version)], "run `make lock`"
