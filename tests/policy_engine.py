"""The Pulumi engine's side of the analyzer protocol, for the policy tests: start infra/policy as the engine
does and call it over gRPC with each resource's properties as the engine would send them.

- Start: `python -u -m pulumi.policy <engine address> <pack dir>` in the pack's directory, with the Python
  of the virtualenv PulumiPolicy.yaml names; the pack prints its port on stdout (pulumi v3.259.0
  sdk/python/cmd/pulumi-language-python/main.go lines 1612-1639; pulumi_policy 1.21 policy.py lines 136-138).
- Then ConfigureStack, and Analyze for each resource (its inputs, before its step runs, in preview and in
  update) and AnalyzeStack at the end (pkg/resource/deploy/step_generator.go lines 1401-1473, 3439-3541).
- Properties: the engine unmarshals what the program registered keeping unknowns and secrets, and marshals
  them for the analyzer with KeepUnknowns, KeepSecrets and SkipInternalKeys (pkg/resource/plugin/
  analyzer_plugin.go lines 306-307, 350-351): a secret goes as {sig: secret, value: v} (the pack unwraps it
  to the plain value), an unknown string as "04da6b54-80e4-46f7-96ec-b56ff0331ba9", and top-level keys that
  start with "__" are dropped (sdk/go/common/resource/plugin/rpc.go lines 95-120, 190-255, 287-297).
  The program's RegisterResource objects already use exactly these encodings, so the wire we record is
  what the engine forwards, less the internal keys. Not modelled: the provider's Check, which the engine
  runs first and which may add defaults (autonames); the policies read only fields the program sets.
"""

from __future__ import annotations

import os
import selectors
import subprocess
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import grpc
import yaml
from google.protobuf import json_format, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

from infra.offline import engine

REPO_ROOT = Path(__file__).resolve().parent.parent
PACK_DIR = REPO_ROOT / "infra" / "policy"
START_DEADLINE_SECONDS = 60
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
SECRET_SIG = {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270"}
MANDATORY, ADVISORY = analyzer_pb2.MANDATORY, analyzer_pb2.ADVISORY


@dataclass
class WireResource:
    type: str
    name: str
    urn: str
    properties: dict  # the RegisterResource object, as JSON


def registered(stack: str, preview: bool, stack_dir: Path = REPO_ROOT) -> list[WireResource]:
    """The custom resources the real program registers for `stack`, as the monitor receives them."""
    wire: list[WireResource] = []

    class WireMonitor(engine.RecordingMonitor):
        def RegisterResource(self, request):  # noqa: N802 (gRPC method name)
            if request.custom:
                wire.append(WireResource(request.type, request.name,
                                         self.make_urn(request.parent, request.type, request.name),
                                         json_format.MessageToDict(request.object)))
            return super().RegisterResource(request)

    with mock.patch.object(engine, "RecordingMonitor", WireMonitor):
        plan = engine.run_plan(stack, stack_dir, preview=preview)
    if not plan.ok:
        raise AssertionError(f"the {stack} plan failed: {plan.error}")
    return wire


def engine_properties(properties: dict) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update({key: value for key, value in properties.items() if not key.startswith("__")})
    return struct


def pack_python() -> Path:
    venv = yaml.safe_load((PACK_DIR / "PulumiPolicy.yaml").read_text())["runtime"]["options"]["virtualenv"]
    # Not resolve(): the venv's python is a symlink to the base interpreter, and the venv is found by its path.
    return Path(os.path.normpath(PACK_DIR / venv / "bin" / "python"))


class PolicyPackProcess:
    """The pack as its own process on 127.0.0.1, stopped by PID when the block ends."""

    def __init__(self, stack: str, preview: bool) -> None:
        self.stack, self.preview = stack, preview

    def __enter__(self) -> "PolicyPackProcess":
        self.process = subprocess.Popen(
            [str(pack_python()), "-u", "-m", "pulumi.policy", "127.0.0.1:1", str(PACK_DIR)],
            cwd=PACK_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        port = self._port()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(self.channel).result(timeout=START_DEADLINE_SECONDS)
        self.stub = analyzer_pb2_grpc.AnalyzerStub(self.channel)
        self.stub.ConfigureStack(analyzer_pb2.AnalyzerStackConfigureRequest(
            stack=self.stack, project="qwen2vl", organization="organization", dry_run=self.preview))
        return self

    def _port(self) -> int:
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout=START_DEADLINE_SECONDS):
            self.process.kill()
            raise AssertionError(f"the policy pack printed no port within {START_DEADLINE_SECONDS} s")
        line = self.process.stdout.readline()
        if not line.strip().isdigit():
            self.process.kill()
            raise AssertionError(f"the policy pack did not start: {line!r} {self.process.stderr.read()}")
        return int(line)

    def __exit__(self, *exc) -> None:
        self.channel.close()
        self.process.kill()
        self.process.wait(timeout=START_DEADLINE_SECONDS)

    def info(self):
        return self.stub.GetAnalyzerInfo(analyzer_pb2.google_dot_protobuf_dot_empty__pb2.Empty())

    def analyze(self, resource: WireResource) -> list:
        response = self.stub.Analyze(analyzer_pb2.AnalyzeRequest(
            type=resource.type, name=resource.name, urn=resource.urn,
            properties=engine_properties(resource.properties)))
        return list(response.diagnostics)

    def analyze_stack(self, resources: list[WireResource]) -> list:
        response = self.stub.AnalyzeStack(analyzer_pb2.AnalyzeStackRequest(resources=[
            analyzer_pb2.AnalyzerResource(type=r.type, name=r.name, urn=r.urn, properties=engine_properties(r.properties))
            for r in resources]))
        return list(response.diagnostics)
