"""Strict mocks: each resource type and invoke token the program may use, with the outputs its
provider would compute. An unknown type or token raises, naming it."""

from __future__ import annotations

import hashlib
from typing import Any, Callable

import pulumi

Outputs = Callable[[str, dict], dict]


class UnmockedCall(Exception):
    """The program used a resource type or invoke the offline engine does not know."""


class InvokeFailure(Exception):
    """An invoke the provider answers with a failure (access denied, an API turned off), as the engine reports it."""


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
    "aws:kms/key:Key": lambda name, inputs: {"arn": f"arn:aws:kms:offline:000000000000:key/{_fake_id('kms', name)}",
                                             "keyId": _fake_id("kms", name)},
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

def _zone_id_prefix(region: str) -> str:
    """EC2's zone-ID prefix of a region: us-east-1 -> use1, ca-central-1 -> cac1."""
    area, direction, number = region.split("-")
    return f"{area}{direction[0]}{number}"


# One account's answer for us-east-1, shaped as EC2 DescribeAvailabilityZones gives it. Names map to IDs per
# account; in this one us-east-1a is use1-az3, where EKS takes no control-plane subnets, and us-east-1b is a
# zone without the eval GPU's instance type in INSTANCE_TYPE_ABSENT below.
ACCOUNT_ZONE_IDS = {"us-east-1": {"us-east-1a": "use1-az3", "us-east-1b": "use1-az5", "us-east-1c": "use1-az1",
                                  "us-east-1d": "use1-az6", "us-east-1e": "use1-az4", "us-east-1f": "use1-az2"}}
# Instance types each zone ID does not offer in this mock account (EC2 DescribeInstanceTypeOfferings).
INSTANCE_TYPE_ABSENT = {"use1-az3": ("g6.12xlarge", "g6e.12xlarge", "g5.12xlarge", "p4d.24xlarge", "p5.48xlarge"),
                        "use1-az5": ("g6.12xlarge", "g6e.12xlarge")}


def _zones_of(region: str) -> dict[str, str]:
    return ACCOUNT_ZONE_IDS.get(region) or {
        f"{region}{suffix}": f"{_zone_id_prefix(region)}-az{i}" for i, suffix in enumerate("abc", 1)}


def _availability_zones(args: dict, region: str) -> dict:
    if args.get("excludeZoneIds") or args.get("excludeNames") or args.get("state") != "available":
        raise UnmockedCall(f"getAvailabilityZones with {args}: the mock answers state=available only")
    zones = _zones_of(region)
    return {"names": list(zones), "zoneIds": list(zones.values()), "id": region, "groupNames": [region],
            "state": "available"}


def _instance_type_offerings(args: dict, region: str) -> dict:
    filters = {f["name"]: f["values"] for f in args.get("filters") or []}
    if args.get("locationType") != "availability-zone-id" or set(filters) != {"instance-type"}:
        raise UnmockedCall(f"getInstanceTypeOfferings with {args}: the mock answers by zone ID and instance type")
    rows = [(zone_id, instance) for zone_id in _zones_of(region).values() for instance in filters["instance-type"]
            if instance not in INSTANCE_TYPE_ABSENT.get(zone_id, ())]
    return {"locations": [zone_id for zone_id, _ in rows], "instanceTypes": [instance for _, instance in rows],
            "locationTypes": ["availability-zone-id"] * len(rows), "locationType": "availability-zone-id",
            "id": region, "region": region, "filters": args.get("filters")}


# The account's quotas as Service Quotas (vCPUs) and Cloud Quotas (GPUs) answer: an account with one eval node's
# worth of G/VT vCPUs and a project with two A100-80GB nodes' worth of GPUs in us-central1. Tests change them;
# None is a quota the caller may not read.
SERVICE_QUOTAS = {"L-DB2E81BA": 64.0, "L-3819A6DF": 0.0, "L-417A185B": 0.0, "L-7212CCBC": 0.0}
CLOUD_QUOTAS = {"GPUS-ALL-REGIONS-per-project": 16, "NVIDIA-A100-80GB-GPUS-per-project-region": 8,
                "PREEMPTIBLE-NVIDIA-A100-80GB-GPUS-per-project-region": 0, "NVIDIA-L4-GPUS-per-project-region": 8}


def _service_quota(args: dict, region: str) -> dict:
    if args.get("serviceCode") != "ec2" or args.get("quotaCode") not in SERVICE_QUOTAS:
        raise UnmockedCall(f"getServiceQuota with {args}: the mock knows ec2 {sorted(SERVICE_QUOTAS)}")
    code = args["quotaCode"]
    if SERVICE_QUOTAS[code] is None:
        raise InvokeFailure(f"AccessDeniedException: not authorized to perform servicequotas:GetServiceQuota on {code}")
    return {"serviceCode": "ec2", "quotaCode": code, "value": SERVICE_QUOTAS[code], "adjustable": True,
            "arn": f"arn:aws:servicequotas:{region}:000000000000:ec2/{code}", "id": code, "region": region,
            "globalQuota": False, "quotaName": code, "serviceName": "Amazon Elastic Compute Cloud (Amazon EC2)"}


def _cloud_quota(args: dict, region: str) -> dict:
    quota = args.get("quotaId")
    if args.get("service") != "compute.googleapis.com" or quota not in CLOUD_QUOTAS:
        raise UnmockedCall(f"getSQuotaInfo with {args}: the mock knows compute {sorted(CLOUD_QUOTAS)}")
    if quota.endswith("-per-project"):
        infos = [{"dimensions": {}, "details": [{"value": str(CLOUD_QUOTAS[quota])}], "applicableLocations": ["global"]}]
    else:  # a regional quota: the project's grant in the region, and the default elsewhere
        infos = [{"dimensions": {"region": region}, "details": [{"value": str(CLOUD_QUOTAS[quota])}],
                  "applicableLocations": [region]},
                 {"dimensions": {}, "details": [{"value": "0"}], "applicableLocations": ["us-east1", "europe-west4"]}]
    return {"quotaId": quota, "service": "compute.googleapis.com", "parent": args.get("parent"),
            "dimensionsInfos": infos, "id": quota, "metric": f"compute.googleapis.com/{quota}"}


# Invokes answer from the inputs of the provider they run on (for example its region).
INVOKE_RESULTS: dict[str, Callable[[dict, str], dict]] = {
    "aws:index/getAvailabilityZones:getAvailabilityZones": _availability_zones,
    "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings": _instance_type_offerings,
    "aws:servicequotas/getServiceQuota:getServiceQuota": _service_quota,
    "gcp:cloudquota/getSQuotaInfo:getSQuotaInfo": _cloud_quota,
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
        try:
            return result(args.args, self.provider_regions.get(provider_name, "")), []
        except InvokeFailure as failure:
            return {}, [("", str(failure))]
