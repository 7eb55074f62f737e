"""The serving workload as Pulumi resources, on the cluster's provider, after the KubeRay operator."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

import pulumi
import pulumi_kubernetes as k8s

from infra.workload.objects import workload_objects
from infra.workload.resources import register
from infra.workload.smoke_job import smoke_report_name
from infra.workload.spec import WorkloadSpec
from infra.workload.upgrade import RECREATE

STATEFUL_KINDS = ("Namespace", "PersistentVolumeClaim")
# The property path whose changes replace a RayService under upgradeStrategy None; a change anywhere below
# it counts (https://www.pulumi.com/docs/iac/concepts/options/replaceonchanges/).
CLUSTER_CONFIG_PATH = "spec.rayClusterConfig"


def substitute(value, needle: str, replacement):
    """`value` with every string equal to `needle` replaced (the builders' image name by the digest)."""
    if isinstance(value, dict):
        return {k: substitute(v, needle, replacement) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, needle, replacement) for v in value]
    return replacement if value == needle else value


def rayservice_options(rayservice: dict) -> pulumi.ResourceOptions:
    """Under upgradeStrategy None KubeRay 1.4 never applies a cluster-level change (upgrade.py), so the
    program replaces the RayService on any change of its cluster, deleting the old one first: its GPUs
    are the ones the new cluster needs. Serve config changes stay in-place updates (KubeRay applies them
    to the active cluster, rayservice_controller.go:155-163)."""
    if rayservice["spec"]["upgradeStrategy"]["type"] != RECREATE:
        return pulumi.ResourceOptions()
    return pulumi.ResourceOptions(replace_on_changes=[CLUSTER_CONFIG_PATH], delete_before_replace=True)


@dataclass
class ServingWorkloadArgs:
    spec: WorkloadSpec
    provider: k8s.Provider
    api_key: pulumi.Output[str]
    hub_token: pulumi.Output[str] | None
    image_ref: pulumi.Output[str]  # the pushed image by digest, replacing spec.image in every object
    after: Sequence[pulumi.Resource]  # the KubeRay operator (and whatever it waits for)


class ServingWorkload(pulumi.ComponentResource):
    def __init__(self, name: str, args: ServingWorkloadArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("qwen2vl:workload:ServingWorkload", name, None, opts)
        spec = args.spec
        objects = workload_objects(spec)
        namespace_obj, rest = objects[0], objects[1:]
        base = pulumi.ResourceOptions(parent=self, provider=args.provider)
        protect = spec.cfg.protect

        self.namespace = register(
            namespace_obj, pulumi.ResourceOptions.merge(base, pulumi.ResourceOptions(depends_on=list(args.after), protect=protect))
        )
        in_namespace = pulumi.ResourceOptions.merge(base, pulumi.ResourceOptions(depends_on=[self.namespace]))
        secrets = [self._secret(spec.api_key_secret, "api-key", args.api_key, spec, in_namespace)]
        if args.hub_token is not None:
            secrets.append(self._secret(spec.hub_token_secret, "token", args.hub_token, spec, in_namespace))

        self.resources: dict[str, pulumi.CustomResource] = {}
        for obj in (substitute(o, spec.image, args.image_ref) for o in rest):
            kind = obj["kind"]
            opts_for = pulumi.ResourceOptions(depends_on=[self.namespace, *secrets])
            if kind in STATEFUL_KINDS:
                # The model cache outlives a destroy in prod: re-downloading 40 GB is slow and costs egress.
                opts_for = pulumi.ResourceOptions.merge(opts_for, pulumi.ResourceOptions(protect=protect, retain_on_delete=protect))
            if kind == "RayService":
                opts_for = pulumi.ResourceOptions.merge(opts_for, rayservice_options(obj))
            if kind == "Job":
                opts_for = pulumi.ResourceOptions.merge(
                    opts_for,
                    pulumi.ResourceOptions(
                        depends_on=[self.resources["RayService"]],
                        custom_timeouts=pulumi.CustomTimeouts(create=f"{obj['spec']['activeDeadlineSeconds'] // 60 + 5}m"),
                    ),
                )
            self.resources[kind] = register(obj, pulumi.ResourceOptions.merge(base, opts_for))

        # The smoke Job writes its report into a ConfigMap; read it back once the Job has completed.
        job = self.resources["Job"]
        report = k8s.core.v1.ConfigMap.get(
            "smoke-report",
            job.metadata.apply(lambda _: f"{spec.namespace}/{smoke_report_name(spec)}"),
            opts=pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=[job]),
        )
        self.smoke_report = report.data.apply(lambda data: json.loads((data or {}).get("report.json", "null")))
        self.endpoint = pulumi.Output.from_input(spec.endpoint_url)
        self.register_outputs({"endpoint": self.endpoint, "namespace": spec.namespace, "smokeReport": self.smoke_report})

    def _secret(self, name: str, key: str, value: pulumi.Output[str], spec: WorkloadSpec, opts) -> k8s.core.v1.Secret:
        return k8s.core.v1.Secret(
            f"secret-{name}",
            metadata=spec.metadata(name, "credentials"),
            type="Opaque",
            string_data={key: pulumi.Output.secret(value)},
            opts=opts,
        )
