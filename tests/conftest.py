import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from infra.config import parse_stack_config  # noqa: E402
from infra.offline.engine import run_plan  # noqa: E402

STACKS = ("eval", "staging", "prod", "local")


def make_config(stack: str = "test", **raw):
    """A StackConfig from camelCase keys with Python values, as `pulumi config set` would store them."""
    def text(value):
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (list, tuple)):
            import json
            return json.dumps(list(value))
        return str(value)

    # An existing cluster, which needs somewhere to push the built image, unless the test names another.
    raw.setdefault("cloud", "existing")
    raw.setdefault("registry", "registry.example.com/ml")
    return parse_stack_config({key: text(value) for key, value in raw.items()}, stack)


_PLANS = {}


@pytest.fixture(scope="session")
def plan_of():
    """The offline plan of a committed stack, computed once per session."""
    def get(stack: str):
        if stack not in _PLANS:
            _PLANS[stack] = run_plan(stack)
        return _PLANS[stack]

    return get


def write_stack(tmp_path: Path, stack: str, config: dict) -> Path:
    """Pulumi.<stack>.yaml with `config`, on an existing cluster unless it names its cloud."""
    import yaml

    config = {"qwen2vl:cloud": "existing", **config}
    (tmp_path / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump({"config": config}))
    return tmp_path


def lock_resolving(monkeypatch, repo: str, commit: str, files: tuple = ()) -> None:
    """Make the program see infra/model.lock.json resolve repo@commit, as scripts/lock_model.py writes it
    where the hub is reachable (the committed lock is unresolved)."""
    import infra.preflight_gate

    lock = {"repo": repo, "revision": commit[:7], "resolved": True, "commit": commit, "files": list(files),
            "checked_tensor_parallel_sizes": [1, 2, 4]}
    monkeypatch.setattr(infra.preflight_gate, "load_lock", lambda: lock)
