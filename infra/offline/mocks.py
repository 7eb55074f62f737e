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


def _named(name: str, inputs: dict, key: str = "name") -> dict:
    """Providers name a resource after its logical name plus a random suffix when none is given."""
    return {key: inputs.get(key) or f"{name}-{_fake_id('name', name)[:7]}"}


def _eks_cluster(name: str, inputs: dict) -> dict:
    return {
        **_named(name, inputs),
        "arn": f"arn:aws:eks:offline:000000000000:cluster/{name}",
        "endpoint": f"https://{_fake_id('eks', name)}.gr7.offline.eks.amazonaws.com",
        "certificateAuthority": {"data": "T0ZGTElORS1DQQ=="},
    }


def _gke_cluster(name: str, inputs: dict) -> dict:
    return {**_named(name, inputs), "endpoint": "203.0.113.10", "masterAuth": {"clusterCaCertificate": "T0ZGTElORS1DQQ=="}}


def _docker_image(name: str, inputs: dict) -> dict:
    # A registry would answer with the pushed manifest's digest; offline it is derived from the tag.
    digest = "sha256:" + hashlib.sha256(str(inputs.get("tags")).encode()).hexdigest()
    return {"digest": digest, "ref": f"{inputs['tags'][0]}@{digest}"}


def _ecr_repository(name: str, inputs: dict) -> dict:
    return {"repositoryUrl": f"000000000000.dkr.ecr.offline.amazonaws.com/{name}", "registryId": "000000000000"}


def _artifact_repository(name: str, inputs: dict) -> dict:
    return {"project": "offline-project", "repositoryId": inputs.get("repositoryId", name)}


def _iam_role(name: str, inputs: dict) -> dict:
    return {**_named(name, inputs), "arn": f"arn:aws:iam::000000000000:role/{name}"}


def _launch_template(name: str, inputs: dict) -> dict:
    # EC2 numbers a launch template's versions from 1.
    return {**_named(name, inputs), "latestVersion": 1}


def _service_account(name: str, inputs: dict) -> dict:
    email = f"{inputs['accountId']}@offline-project.iam.gserviceaccount.com"
    return {"email": email, "member": f"serviceAccount:{email}"}


KUBERNETES_TYPES = (
    "pulumi:providers:kubernetes",
    "kubernetes:core/v1:Namespace",
    "kubernetes:core/v1:Secret",
    "kubernetes:core/v1:Service",
    "kubernetes:core/v1:PersistentVolumeClaim",
    "kubernetes:batch/v1:Job",
    "kubernetes:core/v1:ServiceAccount",
    "kubernetes:rbac.authorization.k8s.io/v1:Role",
    "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding",
    "kubernetes:networking.k8s.io/v1:NetworkPolicy",
    "kubernetes:storage.k8s.io/v1:StorageClass",
    "kubernetes:networking.k8s.io/v1:Ingress",
    "kubernetes:policy/v1:PodDisruptionBudget",
    "kubernetes:scheduling.k8s.io/v1:PriorityClass",
    "kubernetes:ray.io/v1:RayService",
    "kubernetes:monitoring.coreos.com/v1:PrometheusRule",
    "kubernetes:monitoring.coreos.com/v1:PodMonitor",
    "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition",
    "kubernetes:cloud.google.com/v1:BackendConfig",
    "kubernetes:networking.gke.io/v1:ManagedCertificate",
)

def _config_map(name: str, inputs: dict) -> dict:
    if "data" in inputs:  # one the program creates
        return {}
    # The smoke report, read back after the smoke Job ran; offline there is no Job, so no report.
    return {"data": {"report.json": '{"ok": null, "note": "written by the smoke Job when pulumi up runs"}'}}


RESOURCE_OUTPUTS: dict[str, Outputs] = {
    "kubernetes:core/v1:ConfigMap": _config_map,
    **{t: _same for t in KUBERNETES_TYPES},
    "kubernetes:helm.sh/v3:Release": _helm_release,
    "pulumi:providers:random": _same,
    "random:index/randomPassword:RandomPassword": _random_password,
    "pulumi:providers:aws": _same,
    "aws:ec2/vpc:Vpc": _same,
    "aws:ec2/internetGateway:InternetGateway": _same,
    "aws:ec2/routeTable:RouteTable": _same,
    "aws:ec2/routeTableAssociation:RouteTableAssociation": _same,
    "aws:ec2/subnet:Subnet": _same,
    "aws:iam/role:Role": _iam_role,
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": _same,
    "aws:iam/rolePolicy:RolePolicy": _same,
    "aws:ec2/eip:Eip": _same,
    "aws:ec2/natGateway:NatGateway": _same,
    "aws:ec2/launchTemplate:LaunchTemplate": _launch_template,
    "aws:eks/addon:Addon": _same,
    "aws:eks/podIdentityAssociation:PodIdentityAssociation": _same,
    "aws:eks/accessEntry:AccessEntry": _same,
    "aws:eks/accessPolicyAssociation:AccessPolicyAssociation": _same,
    "aws:eks/cluster:Cluster": _eks_cluster,
    "aws:eks/nodeGroup:NodeGroup": lambda name, inputs: _named(name, inputs, "nodeGroupName"),
    "pulumi:providers:gcp": _same,
    "gcp:container/cluster:Cluster": _gke_cluster,
    "gcp:container/nodePool:NodePool": _named,
    "gcp:projects/service:Service": _same,
    "gcp:serviceaccount/account:Account": _service_account,
    "gcp:projects/iAMMember:IAMMember": _same,
    "gcp:compute/router:Router": _named,
    "gcp:compute/routerNat:RouterNat": _same,
    "pulumi:providers:docker-build": _same,
    "docker-build:index:Image": _docker_image,
    "aws:ecr/repository:Repository": _ecr_repository,
    "gcp:artifactregistry/repository:Repository": _artifact_repository,
}

COMPONENT_PREFIX = "qwen2vl:"

def _availability_zones(args: dict, region: str) -> dict:
    return {"names": [f"{region}{suffix}" for suffix in "abc"], "zoneIds": [f"use1-az{i}" for i in (1, 2, 4)],
            "id": region, "groupNames": [region]}


# Invokes answer from the inputs of the provider they run on (for example its region).
INVOKE_RESULTS: dict[str, Callable[[dict, str], dict]] = {
    "aws:index/getAvailabilityZones:getAvailabilityZones": _availability_zones,
    "aws:ecr/getAuthorizationToken:getAuthorizationToken": lambda args, region: {
        "userName": "AWS", "password": "offline-ecr-token", "proxyEndpoint": "https://offline.ecr", "id": region,
        "authorizationToken": "offline", "expiresAt": "never"},
    "gcp:organizations/getClientConfig:getClientConfig": lambda args, region: {
        "accessToken": "offline-gcp-token", "project": "offline-project", "region": region, "zone": "",
        "id": "offline", "defaultLabels": {}},
}


# A custom resource's kind exists only once its CRD does: a cluster answers "no matches for kind" otherwise.
# The CRD of each kind the program creates, which the program must itself apply, read (an existing cluster's)
# or install with a chart that brings it, before the first object of that kind.
CRD_OF_KIND = {
    "kubernetes:ray.io/v1:RayService": "rayservices.ray.io",
    "kubernetes:monitoring.coreos.com/v1:PodMonitor": "podmonitors.monitoring.coreos.com",
    "kubernetes:monitoring.coreos.com/v1:PrometheusRule": "prometheusrules.monitoring.coreos.com",
}
# Charts whose crds/ folder Helm installs (unless skipCrds), by chart name.
CHART_CRDS = {
    "kuberay-operator": ("rayclusters.ray.io", "rayjobs.ray.io", "rayservices.ray.io"),
    "kube-prometheus-stack": ("podmonitors.monitoring.coreos.com", "prometheusrules.monitoring.coreos.com",
                              "servicemonitors.monitoring.coreos.com"),
}
CRD_TYPE = "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition"


class StrictMocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.provider_regions: dict[str, str] = {}
        self.crds: set[str] = set()

    def _track_crds(self, args: pulumi.runtime.MockResourceArgs) -> None:
        if args.typ == CRD_TYPE:
            self.crds.add(args.resource_id or args.inputs["metadata"]["name"])
        elif args.typ == "kubernetes:helm.sh/v3:Release" and not args.inputs.get("skipCrds"):
            self.crds.update(CHART_CRDS.get(args.inputs.get("chart"), ()))
        crd = CRD_OF_KIND.get(args.typ)
        if crd is not None and crd not in self.crds:
            raise UnmockedCall(f"{args.typ} {args.name} is created before anything provides its CRD {crd}: "
                               "the cluster would answer 'no matches for kind'")

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        self._track_crds(args)
        if args.typ.startswith("pulumi:providers:"):
            self.provider_regions[args.name] = args.inputs.get("region", "")
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
        provider_name = args.provider.split("::")[3] if args.provider else ""
        return result(args.args, self.provider_regions.get(provider_name, "")), []
