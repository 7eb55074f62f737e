"""Runs the real Pulumi program offline: the Pulumi SDK's mock monitor with strict mocks.

Every resource type and invoke token the program may use has an entry in `mocks.py`; anything else
raises with its token, so the plan never silently passes over a call it cannot answer. Inputs are
recorded as the engine receives them, with secret values replaced by "[secret]".
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import runpy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from google.protobuf import json_format
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import settings
from pulumi.runtime.rpc import UNKNOWN
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from infra.config import StackConfig, parse_stack_config
from infra.offline.mocks import StrictMocks
from infra.run_mode import OFFLINE_PLAN_ENV, UP_REFUSES

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET_SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG_VALUE = "1b47061264138c4ac30d75fd1eb44270"
MASK = "[secret]"
OFFLINE_SECRET = "offline-placeholder-secret"


class StackFileError(Exception):
    """Pulumi.<stack>.yaml is missing or malformed."""


@dataclass
class RecordedResource:
    type: str
    name: str
    parent: str | None  # the parent's "type::name", None for the stack itself
    inputs: dict
    custom: bool
    protect: bool
    retain_on_delete: bool
    provider: str | None
    depends_on: list[str]
    read: bool = False  # read with Resource.get, not managed
    delete_before_replace: bool = False
    replace_on_changes: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.type}::{self.name}"

    def as_dict(self) -> dict:
        return {
            "type": self.type,
            "name": self.name,
            "parent": self.parent,
            "custom": self.custom,
            "protect": self.protect,
            "retainOnDelete": self.retain_on_delete,
            "provider": self.provider,
            "dependsOn": self.depends_on,
            "read": self.read,
            "deleteBeforeReplace": self.delete_before_replace,
            "inputs": self.inputs,
        }


@dataclass
class PlanResult:
    stack: str
    project: str
    resources: list[RecordedResource] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    cause: BaseException | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def up_refusals(self) -> list[str]:
        """Warnings of what `pulumi up` will refuse although this preview passed."""
        return [warning for warning in self.warnings if warning.startswith(UP_REFUSES)]


def _mask(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get(SECRET_SIG_KEY) == SECRET_SIG_VALUE:
            return MASK
        return {k: _mask(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    return value


def _urn_key(urn: str) -> str:
    """'type::name' from a URN (the last type of a parent chain)."""
    parts = urn.split("::")
    return f"{parts[2].split('$')[-1]}::{parts[3]}"


class WarningCollector(logging.Handler):
    """What the program logs with pulumi.log.warn, which `pulumi preview` would print."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []
        self.logger = logging.getLogger(f"qwen2vl.offline.{id(self)}")
        self.logger.propagate = False
        self.logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _abbreviated(resource_type: str, inputs: dict) -> dict:
    """A CRD's schemas (megabytes for KubeRay's) shown as their digest: the plan says which schema a CRD
    gets, and a change of it, without printing it."""
    if resource_type != "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition":
        return inputs
    for version in inputs.get("spec", {}).get("versions", []):
        schema = version.get("schema")
        if isinstance(schema, dict):
            text = json.dumps(schema, sort_keys=True)
            version["schema"] = f"<{len(text)} bytes, sha256 {hashlib.sha256(text.encode()).hexdigest()[:16]}>"
    return inputs


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """The SDK's mock monitor, recording each registration the way `pulumi preview` would show it."""

    def __init__(self, mocks: StrictMocks) -> None:
        super().__init__(mocks)
        self.recorded: list[RecordedResource] = []

    def RegisterResource(self, request):  # noqa: N802 (gRPC method name)
        inputs = _abbreviated(request.type, _mask(json_format.MessageToDict(request.object, preserving_proto_field_name=True)))
        provider = request.provider.split("::")[3] if request.provider else None
        self.recorded.append(
            RecordedResource(
                type=request.type,
                name=request.name,
                parent=_urn_key(request.parent) if request.parent else None,
                inputs=inputs,
                custom=bool(request.custom),
                protect=bool(request.protect),
                retain_on_delete=bool(request.retainOnDelete),
                provider=provider,
                depends_on=sorted(_urn_key(urn) for urn in request.dependencies),
                delete_before_replace=bool(request.deleteBeforeReplace),
                replace_on_changes=list(request.replaceOnChanges),
            )
        )
        return super().RegisterResource(request)

    def ReadResource(self, request):  # noqa: N802 (gRPC method name)
        """`Resource.get` reads an existing object; the plan shows it like `pulumi preview` does ("read")."""
        self.recorded.append(
            RecordedResource(
                type=request.type,
                name=request.name,
                parent=_urn_key(request.parent) if request.parent else None,
                inputs={"id": request.id},
                custom=True,
                protect=False,
                retain_on_delete=False,
                provider=request.provider.split("::")[3] if request.provider else None,
                depends_on=sorted(_urn_key(urn) for urn in request.dependencies),
                read=True,
            )
        )
        return super().ReadResource(request)


def tree_order(resources: list[RecordedResource]) -> list[RecordedResource]:
    """Parents before children, siblings by type and name: the program registers independent resources
    concurrently, so the order they reach the engine varies from run to run; the plan's must not."""
    children: dict[str | None, list[RecordedResource]] = {}
    for resource in resources:
        children.setdefault(resource.parent, []).append(resource)
    ordered: list[RecordedResource] = []

    def visit(parent_key: str | None) -> None:
        for child in sorted(children.get(parent_key, []), key=lambda r: (r.type, r.name)):
            ordered.append(child)
            visit(child.key)

    visit(None)
    # Anything whose parent was not recorded still belongs in the plan, after the tree.
    seen = {id(r) for r in ordered}
    return ordered + sorted((r for r in resources if id(r) not in seen), key=lambda r: (r.type, r.name))


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load keeps the last of two equal keys; Pulumi's YAML library (Go's yaml.v3) refuses the
    file ("mapping key ... already defined"), and so does the plan, naming the key and both lines."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is set twice, on lines {seen[key]} and {line}; delete one of them",
                    key_node.start_mark)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def project_name(repo_root: Path = REPO_ROOT) -> str:
    return yaml.safe_load((repo_root / "Pulumi.yaml").read_text())["name"]


def stack_config(stack: str, stack_dir: Path = REPO_ROOT) -> tuple[dict[str, str], list[str]]:
    """Pulumi.<stack>.yaml's config as the Pulumi engine hands it to a program: string values, secret keys.

    `secure:` values are ciphertext only the stack's secrets provider can read; offline they become
    a placeholder that is still a secret, so the program takes the same path as with the real value.
    """
    path = stack_dir / f"Pulumi.{stack}.yaml"
    if not path.exists():
        known = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in stack_dir.glob("Pulumi.*.yaml"))
        raise StackFileError(f"no stack file {path.name}; stacks here: {', '.join(known)}")
    try:
        data = yaml.load(path.read_text(), Loader=UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise StackFileError(f"{path.name} is not valid YAML: {exc}") from None
    if data is None:
        raise StackFileError(f"{path.name} is empty; a stack file holds a 'config' mapping that sets at least "
                             f"{project_name()}:cloud (see docs/config.md)")
    if not isinstance(data, dict) or not isinstance(data.get("config") or {}, dict):
        raise StackFileError(f"{path.name} must be a mapping with a 'config' mapping")
    project = project_name()
    config: dict[str, str] = {}
    secret_keys: list[str] = []
    for key, value in (data.get("config") or {}).items():
        full_key = key if ":" in key else f"{project}:{key}"
        if full_key in config:
            raise StackFileError(f"{path.name} sets {full_key} twice (as {key} and as {full_key}); delete one")
        if isinstance(value, dict) and set(value) == {"secure"}:
            config[full_key] = OFFLINE_SECRET
            secret_keys.append(full_key)
        elif isinstance(value, str):
            config[full_key] = value
        elif isinstance(value, bool):
            config[full_key] = "true" if value else "false"
        else:
            config[full_key] = json.dumps(value)
    return config, secret_keys


def read_stack_config(stack: str, stack_dir: Path = REPO_ROOT) -> StackConfig:
    """The validated StackConfig of a stack file, without running the program (secrets left out)."""
    config, secret_keys = stack_config(stack, stack_dir)
    prefix = f"{project_name()}:"
    raw = {k[len(prefix):]: v for k, v in config.items() if k.startswith(prefix) and k not in secret_keys}
    return parse_stack_config(raw, stack)


def _resolve(value: Any) -> Any:
    if isinstance(value, pulumi.Output):
        if _sync_await(value.is_secret()):
            return MASK
        return _resolve(_sync_await(value.future()))
    if isinstance(value, dict):
        return {k: _resolve(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_resolve(v) for v in value]
    return value


class PreviewMocks(pulumi.runtime.Mocks):
    """What `pulumi preview` of a new stack answers: a resource's inputs come back, but what its provider
    computes on create (ids, ARNs, autonames, endpoints) is unknown, and so is every input built from it."""

    def __init__(self, mocks: StrictMocks) -> None:
        self.mocks = mocks

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        _, state = self.mocks.new_resource(args)
        return "", {key: value if key in args.inputs else UNKNOWN for key, value in state.items()}

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list]:
        return self.mocks.call(args)


def run_plan(stack: str, stack_dir: Path = REPO_ROOT, secret_values: dict[str, str] | None = None,
             preview: bool = False) -> PlanResult:
    """Run infra/ for `stack` (config from stack_dir/Pulumi.<stack>.yaml) under strict mocks.

    `secret_values` supplies real values for secret keys ("qwen2vl:apiKey"); they stay secrets.
    `preview` runs it as `pulumi preview` of a new stack would (PreviewMocks); outputs then stay unresolved.
    """
    repo_root = REPO_ROOT
    project = project_name()
    result = PlanResult(stack=stack, project=project)
    config, secret_keys = stack_config(stack, stack_dir)
    for key, value in (secret_values or {}).items():
        config[key] = value
        secret_keys.append(key)
    mocks = PreviewMocks(StrictMocks()) if preview else StrictMocks()
    monitor = RecordingMonitor(mocks)
    # Each plan gets its own root stack resource, as each `pulumi preview` does.
    settings.set_root_resource(None)
    # The SDK creates futures on the thread's current event loop; an `asyncio.run` earlier in the process
    # (a caller's, or a test's) leaves none, so each plan starts on a loop of its own.
    asyncio.set_event_loop(asyncio.new_event_loop())
    warnings = WarningCollector()
    pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=preview, monitor=monitor,
                             logger=warnings.logger)
    pulumi.runtime.set_all_config(config, secret_keys)
    if str(repo_root) not in sys.path:
        sys.path.insert(0, str(repo_root))
    previous = os.environ.get(OFFLINE_PLAN_ENV)
    os.environ[OFFLINE_PLAN_ENV] = "1"
    try:
        _sync_await(run_pulumi_func(lambda: runpy.run_path(str(repo_root / "infra"), run_name="__main__")))
    except pulumi.RunError as error:
        result.error, result.cause = str(error), error.__cause__
    finally:
        if previous is None:
            os.environ.pop(OFFLINE_PLAN_ENV, None)
        else:
            os.environ[OFFLINE_PLAN_ENV] = previous
    result.warnings = list(warnings.messages)
    root = pulumi.runtime.get_root_resource()
    result.resources = tree_order(monitor.recorded)
    if result.ok and not preview:
        result.outputs = {name: _resolve(value) for name, value in sorted(root.outputs.items())}
    return result
