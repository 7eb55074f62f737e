"""The cluster layer as a real `pulumi up` meets it (issue #13): what EKS and GKE would refuse, and what they
would accept but then never schedule, bind, scale, tag or enforce. The real program runs under the strict
recording mocks (infra/offline); the assertions read the recorded inputs after it ran."""

import json
from datetime import date

import pytest
import yaml

from infra import outputs as output_names
from infra import pins
from infra.clusters.aws import kubeconfig as eks_kubeconfig
from infra.clusters.versions import check_kubernetes_version, supported_versions
from infra.config import KEYS_BY_NAME, ConfigError
from infra.nodepool import GPU_NODE_DISK_GB, GPU_PRESENT_LABEL, gpu_pool_spec, gpu_pool_zones, system_pool_spec
from infra.offline.engine import read_stack_config, run_plan
from infra.offline.mocks import _fake_id
from infra.placement.charts import release_pods
from infra.placement.scheduler import matches_node_affinity
from tests.conftest import REPO_ROOT, make_config, write_stack
from tests.test_clusters import transitive_dependencies

TODAY = date(2026, 11, 27)  # the day the support table was read
_VARIANTS = {}


def variant(tmp_path_factory, base_stack, **overrides):
    """The plan of a committed stack with some keys changed (computed once per session)."""
    key = (base_stack, tuple(sorted(overrides.items())))
    if key not in _VARIANTS:
        config = yaml.safe_load((REPO_ROOT / f"Pulumi.{base_stack}.yaml").read_text())["config"]
        config.update({f"qwen2vl:{k}": v for k, v in overrides.items()})
        directory = write_stack(tmp_path_factory.mktemp("stack"), "variant", config)
        _VARIANTS[key] = run_plan("variant", directory)
    return _VARIANTS[key]


def ok(result):
    assert result.ok, result.error
    return result


def all_of(result, type_token):
    return [r for r in result.resources if r.type == type_token]


def one(result, type_token, name=None):
    matches = [r for r in all_of(result, type_token) if name is None or r.name == name]
    assert len(matches) == 1, [r.name for r in all_of(result, type_token)]
    return matches[0]


def mock_id(resource):
    """The id the strict mocks give a resource (what another resource's input refers to)."""
    return f"{resource.name}-{_fake_id(resource.type, resource.name)}"


# 1. Kubernetes version ---------------------------------------------------------------------------------------

def test_default_version_is_one_both_clouds_support_today():
    default = KEYS_BY_NAME["kubernetesVersion"].default
    assert default in supported_versions("aws", TODAY) and default in supported_versions("gcp", TODAY)
    for cloud, extra in (("aws", {"region": "us-east-1", "gpuType": "L4"}),
                         ("gcp", {"region": "us-central1", "gcpProject": "my-gpu-project"})):
        assert check_kubernetes_version(make_config(cloud=cloud, **extra), TODAY) is None


def test_eks_cluster_runs_the_supported_default_with_standard_support_only(plan_of):
    cluster = one(ok(plan_of("eval")), "aws:eks/cluster:Cluster")
    assert cluster.inputs["version"] == "1.35"
    assert cluster.inputs["upgradePolicy"] == {"supportType": "STANDARD"}
    gke = one(ok(plan_of("staging")), "gcp:container/cluster:Cluster")
    assert gke.inputs["minMasterVersion"] in supported_versions("gcp", TODAY)


def test_version_past_end_of_support_is_refused_before_any_resource(tmp_path_factory):
    result = variant(tmp_path_factory, "eval", kubernetesVersion="1.31")
    assert not result.ok
    assert "qwen2vl:kubernetesVersion" in result.error and "2025-11-26" in result.error
    assert "1.35" in result.error  # the supported choices
    assert not [r for r in result.resources if r.custom]


@pytest.mark.parametrize("cloud, version, today, expected", [
    ("aws", "1.34", date(2026, 9, 1), None),
    ("aws", "1.34", TODAY, "warning"),            # standard support ends 2026-12-02, 5 days later
    ("aws", "1.34", date(2026, 12, 3), "error"),
    ("aws", "1.31", TODAY, "error"),               # extended support ended 2026-11-26
    ("gcp", "1.35", date(2027, 2, 10), "warning"),  # 60 days before 2027-04-11
    ("gcp", "1.35", date(2027, 4, 12), "error"),
    ("gcp", "1.34", TODAY, "error"),               # GKE standard support ended 2026-10-01
    ("aws", "1.29", TODAY, "error"),               # not in the table at all
])
def test_version_support_window_with_injected_today(cloud, version, today, expected):
    extra = {"region": "us-east-1", "gpuType": "L4"} if cloud == "aws" else {
        "region": "us-central1", "gcpProject": "my-gpu-project"}
    cfg = make_config(cloud=cloud, kubernetesVersion=version, **extra)
    if expected == "error":
        with pytest.raises(ConfigError) as error:
            check_kubernetes_version(cfg, today)
        assert error.value.key == "kubernetesVersion"
        assert ", ".join(supported_versions(cloud, today)) in str(error.value)
    else:
        warning = check_kubernetes_version(cfg, today)
        assert (warning is None) == (expected is None)
        if warning:
            assert "kubernetesVersion" in warning and version in warning


# 2. EKS storage ------------------------------------------------------------------------------------------------

def test_eks_installs_the_ebs_csi_driver_with_its_own_role_and_a_gp3_class(plan_of):
    result = ok(plan_of("eval"))
    addon = one(result, "aws:eks/addon:Addon", "qwen2vl-aws-ebs-csi-driver")
    role = one(result, "aws:iam/role:Role", "qwen2vl-ebs-csi")
    trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]
    assert trust["Principal"] == {"Service": "pods.eks.amazonaws.com"} and "sts:TagSession" in trust["Action"]
    assert addon.inputs["podIdentityAssociations"] == [
        {"roleArn": "arn:aws:iam::000000000000:role/qwen2vl-ebs-csi", "serviceAccount": "ebs-csi-controller-sa"}]
    attached = {r.inputs["policyArn"] for r in all_of(result, "aws:iam/rolePolicyAttachment:RolePolicyAttachment")
                if r.parent == role.key}
    assert attached == {"arn:aws:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"}
    # The pod identity agent runs before the driver that needs it.
    assert "aws:eks/addon:Addon::qwen2vl-eks-pod-identity-agent" in addon.depends_on
    storage_class = one(result, "kubernetes:storage.k8s.io/v1:StorageClass")
    assert storage_class.inputs["provisioner"] == "ebs.csi.aws.com"
    assert storage_class.inputs["parameters"]["type"] == "gp3"
    assert storage_class.inputs["volumeBindingMode"] == "WaitForFirstConsumer"
    assert read_stack_config("eval").storage_class == storage_class.inputs["metadata"]["name"]


def test_what_mounts_a_volume_comes_after_the_driver_and_its_class(plan_of):
    result = ok(plan_of("eval"))
    deps = transitive_dependencies(result, "kubernetes:ray.io/v1:RayService::rayservice-qwen2vl")
    assert "aws:eks/addon:Addon::qwen2vl-aws-ebs-csi-driver" in deps
    assert "kubernetes:storage.k8s.io/v1:StorageClass::gp3" in deps


# 3. GPUs advertised --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stack", ["eval", "staging"])
def test_device_plugin_daemonset_matches_the_gpu_nodes(plan_of, stack):
    """The Helm release's values as the program sends them, merged over the chart's defaults (vendored from
    pinned nvidia-device-plugin values.yaml), against the labels the cloud puts on the GPU nodes."""
    result = ok(plan_of(stack))
    if stack == "eval":
        labels = one(result, "aws:eks/nodeGroup:NodeGroup", "qwen2vl-gpu").inputs["labels"]
        release = one(result, "kubernetes:helm.sh/v3:Release", "nvidia-device-plugin")
        pod = release_pods("nvidia-device-plugin", release.inputs["values"]).pod_spec
        assert matches_node_affinity(pod, labels)
        assert all(labels.get(k) == v for k, v in pod["nodeSelector"].items())
    else:  # GKE runs its own plugin; the label is still there for anything that selects on it
        labels = one(result, "gcp:container/nodePool:NodePool", "qwen2vl-gpu").inputs["nodeConfig"]["labels"]
    assert labels[GPU_PRESENT_LABEL] == "true"


def test_existing_cluster_docs_name_the_gpu_label():
    assert f"{GPU_PRESENT_LABEL}=true" in (REPO_ROOT / "docs/clusters/existing.md").read_text()


# 4. Node autoscaling on EKS ------------------------------------------------------------------------------------

def test_eks_cluster_autoscaler_discovers_the_clusters_real_name(plan_of):
    result = ok(plan_of("eval"))
    real_name = result.outputs[output_names.CLUSTER_NAME]
    assert real_name != "qwen2vl" and real_name.startswith("qwen2vl-")  # autonamed by the provider
    release = one(result, "kubernetes:helm.sh/v3:Release", "cluster-autoscaler")
    assert release.inputs["version"] == pins.CLUSTER_AUTOSCALER_CHART_VERSION
    assert release.inputs["values"]["autoDiscovery"]["clusterName"] == real_name
    policy = json.loads(one(result, "aws:iam/rolePolicy:RolePolicy").inputs["policy"])
    resize = [s for s in policy["Statement"] if "autoscaling:SetDesiredCapacity" in s["Action"]][0]
    assert resize["Condition"] == {"StringEquals": {f"aws:ResourceTag/k8s.io/cluster-autoscaler/{real_name}": "owned"}}
    assert "eks:DescribeNodegroup" in policy["Statement"][0]["Action"]  # labels and taints at zero nodes
    identity = one(result, "aws:eks/podIdentityAssociation:PodIdentityAssociation")
    assert (identity.inputs["namespace"], identity.inputs["serviceAccount"]) == (
        release.inputs["namespace"], release.inputs["values"]["rbac"]["serviceAccount"]["name"])


def test_eks_gpu_group_starts_at_gpu_nodes_min(plan_of):
    """gpuNodesMin 0 (eval): no GPU node until a GPU pod is pending."""
    group = one(ok(plan_of("eval")), "aws:eks/nodeGroup:NodeGroup", "qwen2vl-gpu")
    assert group.inputs["scalingConfig"] == {"minSize": 0, "maxSize": 1, "desiredSize": 0}


# 5. Cost tags where the cost is --------------------------------------------------------------------------------

def test_eks_node_groups_tag_instances_volumes_and_interfaces(plan_of):
    result = ok(plan_of("eval"))
    templates = {mock_id(t): t for t in all_of(result, "aws:ec2/launchTemplate:LaunchTemplate")}
    groups = all_of(result, "aws:eks/nodeGroup:NodeGroup")
    assert len(groups) == 2
    for group in groups:
        assert "diskSize" not in group.inputs
        template = templates[group.inputs["launchTemplate"]["id"]]
        assert group.inputs["launchTemplate"]["version"] == "1"
        specs = {spec["resourceType"]: spec["tags"] for spec in template.inputs["tagSpecifications"]}
        assert set(specs) == {"instance", "volume", "network-interface"}
        for tags in specs.values():
            assert tags["ttl-hours"] == "4" and tags["cost-center"] and tags["stack"] == "eval"
        root = template.inputs["blockDeviceMappings"][0]
        assert root["deviceName"] == "/dev/xvda" and root["ebs"]["volumeSize"] == GPU_NODE_DISK_GB


# 6. NetworkPolicy enforced -------------------------------------------------------------------------------------

def test_network_policy_is_enforced_on_both_clouds(plan_of):
    cni = one(ok(plan_of("eval")), "aws:eks/addon:Addon", "qwen2vl-vpc-cni")
    assert json.loads(cni.inputs["configurationValues"]) == {"enableNetworkPolicy": "true"}
    for stack in ("staging", "prod"):
        cluster = one(ok(plan_of(stack)), "gcp:container/cluster:Cluster")
        assert cluster.inputs["datapathProvider"] == "ADVANCED_DATAPATH"


# 7. GKE GPU pool placement -------------------------------------------------------------------------------------

@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_gke_pools_in_the_zones_that_offer_the_gpu_and_never_above_max(plan_of, stack):
    result = ok(plan_of(stack))
    cfg = read_stack_config(stack)
    gpu = one(result, "gcp:container/nodePool:NodePool", "qwen2vl-gpu")
    zones = gpu.inputs["nodeLocations"]
    assert zones == ["us-central1-a", "us-central1-c"] == list(gpu_pool_zones(cfg))
    assert gpu.inputs["initialNodeCount"] * len(zones) <= cfg.gpu_nodes_max
    system = one(result, "gcp:container/nodePool:NodePool", "qwen2vl-system")
    assert system.inputs["nodeLocations"] == zones and system.inputs["nodeCount"] == 1


def test_gke_initial_count_per_zone_with_two_nodes_minimum(tmp_path_factory):
    gpu = one(ok(variant(tmp_path_factory, "prod", gpuNodesMin=2, gpuNodesMax=2)), "gcp:container/nodePool:NodePool",
              "qwen2vl-gpu")
    assert gpu.inputs["initialNodeCount"] == 1 and len(gpu.inputs["nodeLocations"]) == 2


def test_gke_zones_override_and_unknown_accelerator_region(tmp_path_factory):
    zones = ["us-central1-a", "us-central1-b"]
    gpu = one(ok(variant(tmp_path_factory, "staging", gpuType="L4", zones=json.dumps(zones))),
              "gcp:container/nodePool:NodePool", "qwen2vl-gpu")
    assert gpu.inputs["nodeLocations"] == zones
    # Without the override, the zones of the region that offer the GPU (infra/catalog/gpu_zones.yaml).
    from_catalog = one(ok(variant(tmp_path_factory, "staging", gpuType="L4")), "gcp:container/nodePool:NodePool",
                       "qwen2vl-gpu")
    assert from_catalog.inputs["nodeLocations"] == ["us-central1-a", "us-central1-b", "us-central1-c"]
    # me-central2 offers L4s, but the catalog has not read that region: the stack must name the zones.
    refused = variant(tmp_path_factory, "staging", gpuType="L4", region="me-central2")
    assert not refused.ok and "qwen2vl:zones" in refused.error and "nvidia-l4" in refused.error
    assert "me-central2" in refused.error


# 8. GKE identities and APIs ------------------------------------------------------------------------------------

def test_gke_nodes_run_as_their_own_least_privilege_account_with_workload_identity(plan_of):
    result = ok(plan_of("staging"))
    account = one(result, "gcp:serviceaccount/account:Account")
    email = f"{account.inputs['accountId']}@offline-project.iam.gserviceaccount.com"
    roles = {(m.inputs["role"], m.inputs["member"]) for m in all_of(result, "gcp:projects/iAMMember:IAMMember")}
    assert roles == {(role, f"serviceAccount:{email}") for role in (
        "roles/container.defaultNodeServiceAccount", "roles/artifactregistry.reader")}
    for pool in all_of(result, "gcp:container/nodePool:NodePool"):
        assert pool.inputs["nodeConfig"]["serviceAccount"] == email
        assert pool.inputs["nodeConfig"]["workloadMetadataConfig"] == {"mode": "GKE_METADATA"}
    cluster = one(result, "gcp:container/cluster:Cluster")
    assert cluster.inputs["workloadIdentityConfig"] == {"workloadPool": "qwen2vl-staging.svc.id.goog"}
    apis = all_of(result, "gcp:projects/service:Service")
    assert {a.inputs["service"] for a in apis} == {
        "container.googleapis.com", "compute.googleapis.com", "artifactregistry.googleapis.com",
        "iam.googleapis.com", "cloudresourcemanager.googleapis.com", "cloudquotas.googleapis.com"}
    # The node account and its role bindings need the IAM and Resource Manager APIs first.
    for resource in [account, *all_of(result, "gcp:projects/iAMMember:IAMMember")]:
        assert {a.key for a in apis} <= set(resource.depends_on), resource.key
    assert all(a.inputs["disableOnDestroy"] is False for a in apis)
    assert {a.key for a in apis} <= set(cluster.depends_on)


# 9. EKS access -------------------------------------------------------------------------------------------------

def test_eks_admin_principals_get_access_entries(tmp_path_factory):
    principals = ["arn:aws:iam::123456789012:role/ci", "arn:aws:iam::123456789012:role/reaper"]
    result = ok(variant(tmp_path_factory, "eval", adminPrincipals=json.dumps(principals)))
    entries = all_of(result, "aws:eks/accessEntry:AccessEntry")
    assert sorted(e.inputs["principalArn"] for e in entries) == principals
    associations = all_of(result, "aws:eks/accessPolicyAssociation:AccessPolicyAssociation")
    assert sorted(a.inputs["principalArn"] for a in associations) == principals
    for association in associations:
        assert association.inputs["policyArn"] == "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
        assert association.inputs["accessScope"] == {"type": "cluster"}


def test_eks_provider_and_kubeconfig_use_the_configured_profile_and_role(tmp_path_factory):
    role = "arn:aws:iam::123456789012:role/qwen2vl-deployer"
    result = ok(variant(tmp_path_factory, "eval", awsProfile="ml-eval", awsRoleArn=role))
    provider = one(result, "pulumi:providers:aws")
    assert provider.inputs["profile"] == "ml-eval" and role in provider.inputs["assumeRoles"]
    user = yaml.safe_load(eks_kubeconfig("c", "https://x", "Q0E=", "us-east-1", "ml-eval", role))["users"][0]["user"]
    assert user["exec"]["env"] == [{"name": "AWS_PROFILE", "value": "ml-eval"}]
    assert user["exec"]["args"][-2:] == ["--role-arn", role]


# 10. EKS networking --------------------------------------------------------------------------------------------

def test_eks_with_one_zone_is_a_config_error(tmp_path_factory):
    result = variant(tmp_path_factory, "eval", zones='["us-east-1a"]')
    assert not result.ok and "qwen2vl:zones" in result.error and "two availability zones" in result.error
    assert not [r for r in result.resources if r.custom]


def test_eks_nodes_are_private_unless_the_stack_opts_in(tmp_path_factory, plan_of):
    result = ok(variant(tmp_path_factory, "eval", publicNodes=False))
    subnets = {mock_id(s): s for s in all_of(result, "aws:ec2/subnet:Subnet")}
    for group in all_of(result, "aws:eks/nodeGroup:NodeGroup"):
        placed = [subnets[i] for i in group.inputs["subnetIds"]]
        assert all(s.inputs["mapPublicIpOnLaunch"] is False for s in placed)
        assert len({s.inputs["availabilityZone"] for s in placed}) == 2
    nat = one(result, "aws:ec2/natGateway:NatGateway")
    private_routes = one(result, "aws:ec2/routeTable:RouteTable", "qwen2vl-private")
    assert private_routes.inputs["routes"][0]["natGatewayId"] == mock_id(nat)
    # eval opts in to public nodes (no NAT gateway to pay for on short runs).
    assert read_stack_config("eval").public_nodes and not all_of(ok(plan_of("eval")), "aws:ec2/natGateway:NatGateway")


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_gke_nodes_of_staging_and_prod_are_private_behind_cloud_nat(plan_of, stack):
    result = ok(plan_of(stack))
    cluster = one(result, "gcp:container/cluster:Cluster")
    assert cluster.inputs["privateClusterConfig"]["enablePrivateNodes"] is True
    nat = one(result, "gcp:compute/routerNat:RouterNat")
    router = one(result, "gcp:compute/router:Router")
    assert nat.key in cluster.depends_on and nat.inputs["router"] == router.inputs["name"]
    assert nat.inputs["sourceSubnetworkIpRangesToNat"] == "ALL_SUBNETWORKS_ALL_IP_RANGES"


def sdk_args_class(type_token):
    """The installed SDK's input type of a resource ("aws:ec2/launchTemplate:LaunchTemplate" ->
    pulumi_aws.ec2.LaunchTemplateArgs): its properties are the provider schema's inputs, with their types."""
    import importlib

    package, module, name = type_token.split(":")
    return getattr(importlib.import_module(f"pulumi_{package}.{module.split('/')[0]}"), f"{name}Args")


def schema_problems(value, hint, path="") -> list[str]:
    """Where `value` (inputs as the engine receives them: camelCase names, plain JSON) does not fit `hint`, an
    SDK type annotation: unknown names at any depth, lists for objects, a bool where the schema has a string."""
    import collections.abc
    import typing

    import pulumi.output as pulumi_output
    from pulumi import Output
    from pulumi._types import input_type_py_to_pulumi_names

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any:
        return []
    if origin is typing.Union:
        candidates = [a for a in args if a is not type(None) and typing.get_origin(a) not in (
            collections.abc.Awaitable, Output) and a is not Output]
        results = [schema_problems(value, a, path) for a in candidates]
        return [] if any(not r for r in results) else min(results, key=len)
    if origin is Output or origin is collections.abc.Awaitable:
        return [f"{path}: an Output/Awaitable only"]
    if origin in (list, collections.abc.Sequence):
        if not isinstance(value, list):
            return [f"{path}: {type(value).__name__}, the schema has a list"]
        return [p for i, item in enumerate(value) for p in schema_problems(item, args[0], f"{path}[{i}]")]
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, dict):
            return [f"{path}: {type(value).__name__}, the schema has a map"]
        return [p for k, item in value.items() for p in schema_problems(item, args[1], f"{path}.{k}")]
    if isinstance(hint, type) and hasattr(hint, "_pulumi_input_type") or (
            isinstance(hint, type) and hint.__name__.endswith("Args")):
        if not isinstance(value, dict):
            return [f"{path}: {type(value).__name__}, the schema has an object {hint.__name__}"]
        names = {wire: py for py, wire in input_type_py_to_pulumi_names(hint).items()}
        problems = []
        for key, item in value.items():
            if key not in names:
                problems.append(f"{path}.{key}: not an input of {hint.__name__}")
                continue
            getter = getattr(hint, names[key]).fget
            problems += schema_problems(item, typing.get_type_hints(getter, {**vars(pulumi_output), **getter.__globals__})[
                "return"], f"{path}.{key}")
        return problems
    if hint is float:
        return [] if isinstance(value, (int, float)) and not isinstance(value, bool) else [f"{path}: not a number"]
    if hint is int:  # the wire has only numbers: an int arrives as 200.0
        ok_type = isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer()
        return [] if ok_type else [f"{path}: {type(value).__name__} {value!r}, the schema has int"]
    if hint in (str, bool):
        ok_type = isinstance(value, hint)
        return [] if ok_type else [f"{path}: {type(value).__name__} {value!r}, the schema has {hint.__name__}"]
    return [f"{path}: no rule for {hint!r}"]


def test_the_schema_check_finds_nested_typos_and_wrong_types():
    hint = sdk_args_class("aws:ec2/launchTemplate:LaunchTemplate")
    good = {"blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": {"volumeSize": 200, "encrypted": "true"}}]}
    assert schema_problems(good, hint) == []
    typo = {"blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": {"volumeSise": 200}}]}
    assert schema_problems(typo, hint) == [".blockDeviceMappings[0].ebs.volumeSise: not an input of "
                                           "LaunchTemplateBlockDeviceMappingEbsArgs"]
    wrong_type = {"blockDeviceMappings": [{"ebs": {"encrypted": True}}], "metadataOptions": [{"httpTokens": "required"}]}
    problems = schema_problems(wrong_type, hint)
    assert any("encrypted: bool True, the schema has str" in p for p in problems)
    assert any("metadataOptions: list, the schema has an object" in p for p in problems)


@pytest.mark.parametrize("stack", ["eval-private", "staging"])
def test_resources_registered_by_type_token_match_the_provider_schema(tmp_path_factory, plan_of, stack):
    """EC2 and Cloud NAT resources are registered by type token (infra/clusters/aws.py and gcp.py say why):
    every input the program sends, at every depth, is an input of the installed SDK's type for it (pulumi-aws
    7.51.1, pulumi-gcp 10.2.0), with the schema's type (a string "true", not a bool; an object, not a list)."""
    result = ok(variant(tmp_path_factory, "eval", publicNodes=False) if stack == "eval-private" else plan_of(stack))
    by_token = [r for r in result.resources if r.type.startswith(("aws:ec2/", "gcp:compute/"))]
    assert by_token
    for resource in by_token:
        assert schema_problems(resource.inputs, sdk_args_class(resource.type)) == [], resource.key


# 11. Ordering --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stack, system_pool", [
    ("eval", "aws:eks/nodeGroup:NodeGroup::qwen2vl-system"),
    ("staging", "gcp:container/nodePool:NodePool::qwen2vl-system"),
])
def test_provider_releases_and_workload_wait_for_the_system_pool(plan_of, stack, system_pool):
    result = ok(plan_of(stack))
    assert system_pool in one(result, "pulumi:providers:kubernetes").depends_on
    for dependent in ("kubernetes:helm.sh/v3:Release::kuberay-operator",
                      "kubernetes:ray.io/v1:RayService::rayservice-qwen2vl"):
        assert system_pool in transitive_dependencies(result, dependent), dependent


# 12. Prod protection -------------------------------------------------------------------------------------------

def test_prod_protects_cluster_not_the_replaceable_gpu_pool(plan_of):
    result = ok(plan_of("prod"))
    assert one(result, "gcp:container/cluster:Cluster").protect
    gpu = one(result, "gcp:container/nodePool:NodePool", "qwen2vl-gpu")
    assert not gpu.protect and gpu.delete_before_replace


def test_protected_eks_keeps_the_gpu_group_replaceable(tmp_path_factory):
    result = ok(variant(tmp_path_factory, "eval", protect=True))
    assert one(result, "aws:eks/cluster:Cluster").protect
    gpu = one(result, "aws:eks/nodeGroup:NodeGroup", "qwen2vl-gpu")
    assert not gpu.protect and gpu.delete_before_replace


# 13. System pool shape -----------------------------------------------------------------------------------------

def test_system_pool_shape_is_config(tmp_path_factory, plan_of):
    system = one(ok(plan_of("eval")), "aws:eks/nodeGroup:NodeGroup", "qwen2vl-system")
    assert system.inputs["instanceTypes"] == [system_pool_spec(read_stack_config("eval")).instance] == ["m6i.xlarge"]
    larger = one(ok(variant(tmp_path_factory, "eval", systemInstanceType="m6i.2xlarge")),
                 "aws:eks/nodeGroup:NodeGroup", "qwen2vl-system")
    assert larger.inputs["instanceTypes"] == ["m6i.2xlarge"]
    gke = one(ok(plan_of("staging")), "gcp:container/nodePool:NodePool", "qwen2vl-system")
    assert gke.inputs["nodeConfig"]["machineType"] == system_pool_spec(read_stack_config("staging")).instance


def test_gpu_pool_labels_keep_the_workload_selector(plan_of):
    """The device-plugin label is added to the nodes, not to what the workload selects on."""
    pool = gpu_pool_spec(read_stack_config("eval"))
    assert GPU_PRESENT_LABEL not in pool.placement.node_selector
    assert one(ok(plan_of("eval")), "aws:eks/nodeGroup:NodeGroup", "qwen2vl-gpu").inputs["labels"] == pool.node_labels


def test_the_registry_waits_for_the_projects_apis(plan_of):
    """A fresh GCP project refuses an Artifact Registry repository until artifactregistry.googleapis.com
    is enabled (review-pulumi #12): the repository depends on the enabled APIs."""
    result = ok(plan_of("staging"))
    repository = one(result, "gcp:artifactregistry/repository:Repository")
    assert any("projects/service:Service" in dependency for dependency in repository.depends_on), \
        repository.depends_on


# 14. Zones EKS accepts, that offer the GPU ----------------------------------------------------------------------

def test_eks_subnets_skip_zones_eks_refuses_and_zones_without_the_gpu(plan_of):
    """The mock account maps us-east-1a to use1-az3 (EKS takes no control-plane subnet there) and offers no
    g6.12xlarge in us-east-1b (use1-az5): the subnets go to the next two zones, and the plan says why."""
    result = ok(plan_of("eval"))
    zones = sorted({s.inputs["availabilityZone"] for s in all_of(result, "aws:ec2/subnet:Subnet")})
    assert zones == ["us-east-1c", "us-east-1d"]
    choice = result.outputs[output_names.CLUSTER_ZONES]
    assert choice["zones"] == zones and choice["zoneIds"] == ["use1-az1", "use1-az6"]
    assert "EKS does not accept" in choice["passedOver"]["us-east-1a (use1-az3)"]
    assert "g6.12xlarge is not offered" in choice["passedOver"]["us-east-1b (use1-az5)"]


def test_the_plan_summary_names_the_zones_and_why(plan_of):
    from infra.offline.report import summary

    zones = [v for v in summary(plan_of("eval")) if v.name == "zones"]
    assert len(zones) == 1 and zones[0].message.startswith("us-east-1c, us-east-1d (use1-az1, use1-az6)")
    assert "not us-east-1a (use1-az3): EKS does not accept" in zones[0].message


def test_eks_zone_choice_refuses_with_fewer_than_two_usable_zones():
    from infra.nodepool import eks_zone_choice

    cfg = make_config(cloud="aws", region="us-east-1", gpuType="L4", zones=["us-east-1a", "us-east-1b"])
    with pytest.raises(ConfigError) as error:
        eks_zone_choice(cfg, ["us-east-1a", "us-east-1b", "us-east-1c"], ["use1-az3", "use1-az5", "use1-az1"],
                        ["use1-az1", "use1-az5"])
    assert error.value.key == "zones" and "use1-az3" in str(error.value) and "found us-east-1b" in str(error.value)


def test_gke_plan_says_where_its_zones_come_from(plan_of):
    choice = ok(plan_of("staging")).outputs[output_names.CLUSTER_ZONES]
    assert choice["zones"] == ["us-central1-a", "us-central1-c"] and "gpu_zones.yaml" in choice["why"]


# 15. Teardown order and GPU labels ------------------------------------------------------------------------------

@pytest.mark.parametrize("stack, gpu_pool", [
    ("eval", "aws:eks/nodeGroup:NodeGroup::qwen2vl-gpu"),
    ("staging", "gcp:container/nodePool:NodePool::qwen2vl-gpu"),
])
def test_no_kubernetes_object_depends_on_the_gpu_pool(plan_of, stack, gpu_pool):
    """A failed Kubernetes delete makes the engine skip everything that object depends on; so nothing in
    Kubernetes may depend on the GPU pool, or a failed destroy would leave a GPU node billing."""
    result = ok(plan_of(stack))
    for resource in result.resources:
        if resource.type.startswith(("kubernetes:", "pulumi:providers:kubernetes")):
            assert gpu_pool not in transitive_dependencies(result, resource.key), resource.key


def test_nat_gateway_waits_for_the_internet_gateway(tmp_path_factory):
    result = ok(variant(tmp_path_factory, "eval", publicNodes=False))
    nat = one(result, "aws:ec2/natGateway:NatGateway")
    assert "aws:ec2/internetGateway:InternetGateway::qwen2vl-igw" in nat.depends_on


def test_cluster_and_node_groups_come_after_their_role_policies(plan_of):
    result = ok(plan_of("eval"))
    attachments = {r.key: r for r in all_of(result, "aws:iam/rolePolicyAttachment:RolePolicyAttachment")}

    def policies_of(role_name):
        return {key for key, r in attachments.items() if r.parent == f"aws:iam/role:Role::{role_name}"}

    assert policies_of("qwen2vl-cluster") <= set(one(result, "aws:eks/cluster:Cluster").depends_on)
    for group in all_of(result, "aws:eks/nodeGroup:NodeGroup"):
        assert policies_of("qwen2vl-nodes") and policies_of("qwen2vl-nodes") <= set(group.depends_on)
    ebs = one(result, "aws:eks/addon:Addon", "qwen2vl-aws-ebs-csi-driver")
    assert policies_of("qwen2vl-ebs-csi") <= set(ebs.depends_on)


def test_gpu_launch_template_has_its_own_options(plan_of):
    result = ok(plan_of("eval"))
    template = one(result, "aws:ec2/launchTemplate:LaunchTemplate", "qwen2vl-gpu")
    assert not template.delete_before_replace and one(result, "aws:eks/nodeGroup:NodeGroup", "qwen2vl-gpu").delete_before_replace


def test_eks_gpu_nodes_carry_cluster_autoscalers_gpu_label_at_zero_nodes(plan_of):
    """CA knows a GPU node by k8s.amazonaws.com/accelerator; at zero nodes it builds the template from the group's
    labels (eks:DescribeNodegroup, which its policy allows), so the group's labels are what it sees."""
    result = ok(plan_of("eval"))
    group = one(result, "aws:eks/nodeGroup:NodeGroup", "qwen2vl-gpu")
    assert group.inputs["labels"]["k8s.amazonaws.com/accelerator"] == "nvidia-l4"
    policy = json.loads(one(result, "aws:iam/rolePolicy:RolePolicy").inputs["policy"])
    assert "eks:DescribeNodegroup" in policy["Statement"][0]["Action"]
    assert "k8s.amazonaws.com/accelerator" not in one(result, "aws:eks/nodeGroup:NodeGroup", "qwen2vl-system").inputs.get(
        "labels", {})


# 16. Cost tags on the volumes the CSI drivers create ------------------------------------------------------------

def test_eks_model_volumes_carry_the_stacks_cost_tags(plan_of):
    result = ok(plan_of("eval"))
    parameters = one(result, "kubernetes:storage.k8s.io/v1:StorageClass", "gp3").inputs["parameters"]
    tags = dict(value.split("=", 1) for key, value in parameters.items() if key.startswith("tagSpecification_"))
    assert tags == read_stack_config("eval").labels
    assert tags["stack"] == "eval" and tags["ttl-hours"] == "4"


# 17. Names unique per stack inside one project -----------------------------------------------------------------

def test_two_gcp_stacks_in_one_project_do_not_share_names(plan_of):
    def names(stack):
        result = ok(plan_of(stack))
        return {one(result, "gcp:serviceaccount/account:Account").inputs["accountId"],
                one(result, "gcp:compute/router:Router").inputs["name"],
                one(result, "gcp:artifactregistry/repository:Repository").inputs["repositoryId"]}

    assert not names("staging") & names("prod")
    assert all(len(n) <= 30 for n in names("staging") if "nodes" in n)


# 18. GPU quota before the bill ---------------------------------------------------------------------------------

@pytest.fixture
def deploying(monkeypatch):
    """Run the program as `pulumi up` would (the plan reads no account; `up` does)."""
    import infra.run_mode

    monkeypatch.setattr(infra.run_mode, "deploying", lambda: True)
    return monkeypatch


@pytest.mark.parametrize("stack, quota, words", [
    ("eval", ("SERVICE_QUOTAS", "L-DB2E81BA", 0.0),
     ["L-DB2E81BA", "Running On-Demand G and VT instances", "in us-east-1 is 0 vCPUs", "needs 48",
      "gpuNodesMax 1 x 48 vCPUs of g6.12xlarge", "--quota-code L-DB2E81BA --desired-value 48"]),
    ("staging", ("CLOUD_QUOTAS", "NVIDIA-A100-80GB-GPUS-per-project-region", 2),
     ["NVIDIA-A100-80GB-GPUS-per-project-region", "in us-central1 is 2 GPUs", "needs 4",
      "--quota-id=NVIDIA-A100-80GB-GPUS-per-project-region --preferred-value=4"]),
    ("staging", ("CLOUD_QUOTAS", "GPUS-ALL-REGIONS-per-project", 0), ["GPUS-ALL-REGIONS-per-project", "project-wide is 0"]),
])
def test_up_refuses_before_the_cluster_when_the_gpu_quota_is_too_small(deploying, stack, quota, words):
    import infra.offline.mocks as mocks

    table, key, value = quota
    deploying.setitem(getattr(mocks, table), key, value)
    result = run_plan(stack)
    assert not result.ok
    for word in words:
        assert word in result.error, (word, result.error)
    # Nothing that bills was registered: only the stack, components and the cloud provider.
    assert not [r.key for r in result.resources if r.custom and not r.type.startswith("pulumi:providers:")]


def test_the_plan_says_what_up_will_check(plan_of):
    eval_notice = [w for w in plan_of("eval").warnings if "`pulumi up` checks GPU quota" in w]
    assert len(eval_notice) == 1 and "L-DB2E81BA >= 48 vCPUs" in eval_notice[0] and "at least 48 vCPUs" in eval_notice[0]
    staging_notice = [w for w in plan_of("staging").warnings if "`pulumi up` checks GPU quota" in w]
    assert len(staging_notice) == 1 and "NVIDIA-A100-80GB-GPUS-per-project-region" in staging_notice[0]


def test_up_with_enough_quota_creates_the_cluster(deploying):
    result = run_plan("eval")
    assert result.ok, result.error
    one(result, "aws:eks/cluster:Cluster")
    assert not any("`pulumi up` checks GPU quota" in w for w in result.warnings)


def test_spot_draws_on_the_spot_quota(deploying, tmp_path_factory):
    config = yaml.safe_load((REPO_ROOT / "Pulumi.eval.yaml").read_text())["config"]
    config["qwen2vl:spot"] = True
    result = run_plan("variant", write_stack(tmp_path_factory.mktemp("spot"), "variant", config))
    assert not result.ok and "L-3819A6DF" in result.error and "All G and VT Spot Instance Requests" in result.error


def test_an_unreadable_quota_is_a_warning_not_a_refusal(deploying):
    import infra.offline.mocks as mocks

    deploying.setitem(mocks.SERVICE_QUOTAS, "L-DB2E81BA", None)  # the role may not call servicequotas:GetServiceQuota
    result = run_plan("eval")
    assert result.ok, result.error
    assert any("could not read the GPU quota L-DB2E81BA" in w and "check it by hand" in w for w in result.warnings)


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_gke_model_volumes_carry_the_stacks_labels(plan_of, stack):
    """The gcp stacks' model volumes come from the stack's own PD class, whose driver labels every disk."""
    result = ok(plan_of(stack))
    cfg = read_stack_config(stack)
    storage_class = one(result, "kubernetes:storage.k8s.io/v1:StorageClass")
    assert storage_class.inputs["provisioner"] == "pd.csi.storage.gke.io"
    assert cfg.storage_class == storage_class.inputs["metadata"]["name"]
    labels = dict(pair.split("=", 1) for pair in storage_class.inputs["parameters"]["labels"].split(","))
    assert labels == cfg.labels and labels["stack"] == stack
    assert "kubernetes:storage.k8s.io/v1:StorageClass::qwen2vl-pd-balanced" in transitive_dependencies(
        result, "kubernetes:ray.io/v1:RayService::rayservice-qwen2vl")


def test_the_plan_warns_when_cluster_autoscaler_and_kubernetes_minors_differ(plan_of):
    from infra.clusters import autoscaler_version_mismatch

    assert autoscaler_version_mismatch(read_stack_config("eval")) is None
    assert not any("Cluster Autoscaler" in w for w in plan_of("eval").warnings)
    warning = autoscaler_version_mismatch(make_config(cloud="aws", region="us-east-1", gpuType="L4",
                                                      kubernetesVersion="1.34"))
    assert "made for Kubernetes 1.35, not kubernetesVersion 1.34" in warning and "infra/pins.py" in warning
    assert autoscaler_version_mismatch(make_config(cloud="gcp", region="us-central1", gcpProject="my-gpu-project",
                                                   kubernetesVersion="1.34")) is None  # GKE runs its own


# 17. Serving image: registry build cache, push credentials ----------------------------------------------------

@pytest.mark.parametrize("stack", ["eval", "staging"])
def test_the_image_build_reads_and_writes_a_registry_cache(plan_of, stack):
    from infra.image_build import BUILD_CACHE_TAG, IMAGE_NAME

    result = ok(plan_of(stack))
    build = one(result, "docker-build:index:Image", f"{IMAGE_NAME}-build")
    push = one(result, "docker-build:index:Image", IMAGE_NAME)
    cache_ref = push.inputs["cacheTo"][0]["registry"]["ref"]
    assert cache_ref == push.inputs["tags"][0].rsplit(":", 1)[0] + f":{BUILD_CACHE_TAG}"
    assert push.inputs["cacheTo"][0]["registry"]["mode"] == "max"
    assert push.inputs["cacheTo"][0]["registry"]["imageManifest"] is True
    assert build.inputs["cacheFrom"] == push.inputs["cacheFrom"] == [{"registry": {"ref": cache_ref}}]
    assert build.inputs["push"] is False and push.inputs["push"] is True
    # The push repeats the build from the builder's cache: the same definition.
    same = ("tags", "buildArgs", "context", "dockerfile", "platforms")
    assert {k: build.inputs[k] for k in same} == {k: push.inputs[k] for k in same}


def test_ecr_keeps_content_tags_immutable_but_lets_the_cache_tag_move(plan_of):
    from infra.image_build import BUILD_CACHE_TAG

    repository = one(ok(plan_of("eval")), "aws:ecr/repository:Repository")
    assert repository.inputs["imageTagMutability"] == "IMMUTABLE_WITH_EXCLUSION"
    assert repository.inputs["imageTagMutabilityExclusionFilters"] == [
        {"filter": BUILD_CACHE_TAG, "filterType": "WILDCARD"}]


@pytest.mark.parametrize("stack, token_invoke", [
    ("staging", "gcp:organizations/getClientConfig:getClientConfig"),
    ("eval", "aws:ecr/getAuthorizationToken:getAuthorizationToken"),
])
def test_the_push_token_is_taken_after_the_build(monkeypatch, stack, token_invoke):
    """A GCP access token lasts an hour: the push's token is minted once the (long) build is done, not when
    the program starts."""
    from infra.image_build import IMAGE_NAME
    from infra.offline.mocks import StrictMocks

    events = []
    new_resource, call = StrictMocks.new_resource, StrictMocks.call

    def recording_new_resource(self, args):
        events.append(("resource", args.typ, args.name))
        return new_resource(self, args)

    def recording_call(self, args):
        events.append(("invoke", args.token, None))
        return call(self, args)

    monkeypatch.setattr(StrictMocks, "new_resource", recording_new_resource)
    monkeypatch.setattr(StrictMocks, "call", recording_call)
    ok(run_plan(stack))
    built = events.index(("resource", "docker-build:index:Image", f"{IMAGE_NAME}-build"))
    pushed = events.index(("resource", "docker-build:index:Image", IMAGE_NAME))
    assert any(event[:2] == ("invoke", token_invoke) for event in events[built:pushed])


# 18. Control plane: logs, Secrets encryption, API access, maintenance -----------------------------------------

def test_eks_logs_the_control_plane_and_encrypts_secrets_with_its_own_key(tmp_path_factory):
    result = ok(variant(tmp_path_factory, "eval", protect=True))
    cluster = one(result, "aws:eks/cluster:Cluster")
    assert {"api", "audit", "authenticator"} <= set(cluster.inputs["enabledClusterLogTypes"])
    key = one(result, "aws:kms/key:Key")
    assert key.protect and cluster.protect and key.inputs["enableKeyRotation"] is True
    encryption = cluster.inputs["encryptionConfig"]
    assert encryption["resources"] == ["secrets"]
    assert encryption["provider"]["keyArn"].startswith("arn:aws:kms:")
    assert f"aws:kms/key:Key::{key.name}" in cluster.depends_on


def test_eks_api_endpoint_is_private_too_and_limited_by_api_allowed_cidrs(tmp_path_factory, plan_of):
    default = ok(plan_of("eval"))
    vpc = one(default, "aws:eks/cluster:Cluster").inputs["vpcConfig"]
    assert vpc["endpointPrivateAccess"] is True and vpc["endpointPublicAccess"] is True
    assert vpc["publicAccessCidrs"] == ["0.0.0.0/0"]
    assert any("public API endpoint accepts connections from 0.0.0.0/0" in w for w in default.warnings)
    limited = ok(variant(tmp_path_factory, "eval", apiAllowedCidrs='["203.0.113.0/24", "198.51.100.7/32"]'))
    vpc = one(limited, "aws:eks/cluster:Cluster").inputs["vpcConfig"]
    assert vpc["publicAccessCidrs"] == ["203.0.113.0/24", "198.51.100.7/32"]
    assert not any("public API endpoint" in w for w in limited.warnings)


def test_gke_master_authorized_networks_come_from_api_allowed_cidrs(tmp_path_factory, plan_of):
    default = ok(plan_of("staging"))
    assert "masterAuthorizedNetworksConfig" not in one(default, "gcp:container/cluster:Cluster").inputs
    assert any("public API endpoint accepts connections from 0.0.0.0/0" in w for w in default.warnings)
    limited = ok(variant(tmp_path_factory, "staging", apiAllowedCidrs='["203.0.113.0/24"]'))
    networks = one(limited, "gcp:container/cluster:Cluster").inputs["masterAuthorizedNetworksConfig"]
    assert [block["cidrBlock"] for block in networks["cidrBlocks"]] == ["203.0.113.0/24"]
    assert not any("public API endpoint" in w for w in limited.warnings)
    with pytest.raises(ConfigError, match="apiAllowedCidrs"):
        make_config(cloud="gcp", region="us-central1", gcpProject="my-gpu-project", apiAllowedCidrs='["10.0.0.300/8"]')


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_gke_upgrades_in_a_maintenance_window_without_a_surge_gpu_node(plan_of, stack):
    result = ok(plan_of(stack))
    window = one(result, "gcp:container/cluster:Cluster").inputs["maintenancePolicy"]["recurringWindow"]
    assert window["recurrence"].startswith("FREQ=WEEKLY")
    start, end = (date.fromisoformat(window[k][:10]) for k in ("startTime", "endTime"))
    assert start == end and int(window["endTime"][11:13]) - int(window["startTime"][11:13]) >= 4
    upgrade = one(result, "gcp:container/nodePool:NodePool", "qwen2vl-gpu").inputs["upgradeSettings"]
    assert upgrade == {"strategy": "SURGE", "maxSurge": 0, "maxUnavailable": 1}
