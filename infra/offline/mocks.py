"""Strict mocks: each resource type and invoke token the program may use, with the outputs its
provider would compute. An unknown type or token raises, naming it."""

from __future__ import annotations

import hashlib
from typing import Any, Callable

import pulumi

Outputs = Callable[[str, dict], dict]


class UnmockedCall(Exception):
    """The program used a resource type or invoke the offline engine does not know."""


def _same(name: str, inputs: dict) -> dict:
    return {}


def _fake_id(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:12]


def _random_password(name: str, inputs: dict) -> dict:
    # A stand-in value; the engine reports it only as a secret.
    return {"result": pulumi.Output.secret(f"offline-{_fake_id('random', name)}")}


def _helm_release(name: str, inputs: dict) -> dict:
    return {"status": {"status": "deployed", "version": inputs.get("version"), "namespace": inputs.get("namespace")}}


KUBERNETES_TYPES = (
    "pulumi:providers:kubernetes",
    "kubernetes:core/v1:Namespace",
    "kubernetes:core/v1:Secret",
    "kubernetes:core/v1:Service",
    "kubernetes:core/v1:PersistentVolumeClaim",
    "kubernetes:batch/v1:Job",
    "kubernetes:networking.k8s.io/v1:NetworkPolicy",
    "kubernetes:networking.k8s.io/v1:Ingress",
    "kubernetes:ray.io/v1:RayService",
    "kubernetes:monitoring.coreos.com/v1:ServiceMonitor",
    "kubernetes:monitoring.coreos.com/v1:PodMonitor",
)

RESOURCE_OUTPUTS: dict[str, Outputs] = {
    **{t: _same for t in KUBERNETES_TYPES},
    "kubernetes:helm.sh/v3:Release": _helm_release,
    "pulumi:providers:random": _same,
    "random:index/randomPassword:RandomPassword": _random_password,
}

COMPONENT_PREFIX = "qwen2vl:"

INVOKE_RESULTS: dict[str, Callable[[dict], dict]] = {}


def register_resource_outputs(type_token: str, outputs: Outputs) -> None:
    RESOURCE_OUTPUTS[type_token] = outputs


def register_invoke(token: str, result: Callable[[dict], dict]) -> None:
    INVOKE_RESULTS[token] = result


class StrictMocks(pulumi.runtime.Mocks):
    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        outputs = RESOURCE_OUTPUTS.get(args.typ)
        if outputs is None and not args.custom and args.typ.startswith(COMPONENT_PREFIX):
            outputs = _same  # our own ComponentResources: the engine only records them
        if outputs is None:
            raise UnmockedCall(f"resource type {args.typ} (logical name {args.name}) has no offline mock")
        state: dict[str, Any] = {**args.inputs, **outputs(args.name, args.inputs)}
        return f"{args.name}-{_fake_id(args.typ, args.name)}", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list]:
        result = INVOKE_RESULTS.get(args.token)
        if result is None:
            raise UnmockedCall(f"invoke {args.token} has no offline mock")
        return result(args.args), []
