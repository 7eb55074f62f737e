"""The Serve application's shape, read from its source: what Ray 2.38.0 can run. The behaviour itself is
checked on Ray 2.38.0 by the real-Serve tests; this catches, without Ray, a return to the shapes that fail
there before any request is served."""

import ast

from tests.conftest import REPO_ROOT

APP = REPO_ROOT / "images" / "vllm" / "qwen2vl_serve" / "app.py"


def deployment_class():
    tree = ast.parse(APP.read_text())
    return tree, next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "VLLMServer")


def test_the_deployment_is_plain_with_an_async_call_taking_the_request():
    """Ray 2.38.0's @serve.ingress never awaits an async __init__ (ray/serve/api.py:216-219) and pickles a
    FastAPI app that fastapi >= 0.140 cannot pickle (api.py:205-214); a plain class's async __init__ is
    awaited (serve/_private/replica.py:884-911) and its __call__ gets a starlette Request
    (replica.py:1001-1004)."""
    tree, cls = deployment_class()
    decorators = [ast.unparse(d) for d in cls.decorator_list]
    assert not [d for d in decorators if "ingress" in d], decorators
    assert [d for d in decorators if d.startswith("serve.deployment")]
    methods = {n.name: n for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    assert isinstance(methods["__init__"], ast.AsyncFunctionDef)
    call = methods["__call__"]
    assert isinstance(call, ast.AsyncFunctionDef) and [a.arg for a in call.args.args] == ["self", "request"]
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in node.names} | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not [name for name in imported if name and name.startswith("fastapi")]
