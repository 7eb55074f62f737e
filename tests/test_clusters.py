"""Cluster targets under strict mocks: the GPU shape follows gpuType, taints/labels/autoscaling come
from the one pool spec, invokes are mocked explicitly, and order and protection hold in the engine."""

import pytest
import yaml

from infra import outputs as output_names
from infra.nodepool import gpu_pool_spec
from infra.offline.engine import read_stack_config, run_plan
from infra.nodepool import GPU_POOL_LABEL, GPU_PRESENT_LABEL, GPU_TYPE_LABEL
from tests.conftest import REPO_ROOT, write_stack


def stack_with(tmp_path, base_stack, **overrides):
    config = yaml.safe_load((REPO_ROOT / f"Pulumi.{base_stack}.yaml").read_text())["config"]
    config.update({f"qwen2vl:{k}": v for k, v in overrides.items()})
    write_stack(tmp_path, "variant", config)
    result = run_plan("variant", tmp_path)
    assert result.ok, result.error
    return result


def one(result, type_token, name_suffix=""):
    matches = [r for r in result.resources if r.type == type_token and r.name.endswith(name_suffix)]
    assert len(matches) == 1, [r.name for r in matches]
    return matches[0]


@pytest.mark.parametrize("gpu, instance", [("L4", "g6.12xlarge"), ("L40S", "g6e.12xlarge"), ("A10G", "g5.12xlarge")])
def test_eks_gpu_instance_follows_the_gpu(tmp_path, gpu, instance):
    group = one(stack_with(tmp_path, "eval", gpuType=gpu, maxHourlyUsd=50, maxTotalUsd=500),
                "aws:eks/nodeGroup:NodeGroup", "-gpu")
    assert group.inputs["instanceTypes"] == [instance]
    assert group.inputs["amiType"] == "AL2023_x86_64_NVIDIA"
    assert group.inputs["labels"][GPU_TYPE_LABEL] == gpu


def test_eks_gpu_group_taint_labels_scaling_and_tags(plan_of):
    result = plan_of("eval")
    cfg = read_stack_config("eval")
    pool = gpu_pool_spec(cfg)
    group = one(result, "aws:eks/nodeGroup:NodeGroup", "-gpu")
    assert group.inputs["taints"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NO_SCHEDULE"}]
    assert group.inputs["labels"] == {GPU_POOL_LABEL: "gpu", GPU_TYPE_LABEL: "L4", GPU_PRESENT_LABEL: "true",
                                      "k8s.amazonaws.com/accelerator": "nvidia-l4"}
    assert pool.node_labels.items() <= group.inputs["labels"].items()
    assert group.inputs["scalingConfig"] == {"minSize": 0, "maxSize": 1, "desiredSize": 0}
    assert group.inputs["capacityType"] == "ON_DEMAND"
    tags = group.inputs["tags"]
    assert tags["ttl-hours"] == "4" and tags["stack"] == "eval" and "cost-center" in tags
    provider = one(result, "pulumi:providers:aws")
    assert provider.inputs["region"] == "us-east-1"
    assert '"ttl-hours":"4"' in provider.inputs["defaultTags"].replace(" ", "")


def test_eks_spot(tmp_path):
    group = one(stack_with(tmp_path, "eval", spot=True), "aws:eks/nodeGroup:NodeGroup", "-gpu")
    assert group.inputs["capacityType"] == "SPOT"


def test_eks_with_existing_subnets_makes_no_vpc(tmp_path):
    result = stack_with(tmp_path, "eval", subnetIds='["subnet-0abc1234", "subnet-0def5678"]')
    assert not [r for r in result.resources if r.type.startswith("aws:ec2/") and r.type != "aws:ec2/launchTemplate:LaunchTemplate"]
    group = one(result, "aws:eks/nodeGroup:NodeGroup", "-gpu")
    assert group.inputs["subnetIds"] == ["subnet-0abc1234", "subnet-0def5678"]


@pytest.mark.parametrize("gpu, machine, accelerator, zones", [
    ("A100-80GB", "a2-ultragpu-4g", "nvidia-a100-80gb", None),
    ("A100-40GB", "a2-highgpu-4g", "nvidia-tesla-a100", None),
    # The zone catalog does not list L4 zones yet (infra/catalog/gpu_zones.yaml): the stack names them.
    ("L4", "g2-standard-48", "nvidia-l4", '["us-central1-a", "us-central1-b"]'),
])
def test_gke_gpu_pool_follows_the_gpu(tmp_path, gpu, machine, accelerator, zones):
    extra = {"zones": zones} if zones else {}
    pool = one(stack_with(tmp_path, "staging", gpuType=gpu, **extra), "gcp:container/nodePool:NodePool", "-gpu")
    node = pool.inputs["nodeConfig"]
    assert node["machineType"] == machine
    assert node["guestAccelerators"] == [{"type": accelerator, "count": 4,
                                          "gpuDriverInstallationConfig": {"gpuDriverVersion": "LATEST"}}]


def test_gke_gpu_pool_taint_autoscaling_and_spot(tmp_path, plan_of):
    pool = one(plan_of("staging"), "gcp:container/nodePool:NodePool", "-gpu")
    assert pool.inputs["autoscaling"] == {"totalMinNodeCount": 0, "totalMaxNodeCount": 1}
    assert pool.inputs["nodeConfig"]["taints"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NO_SCHEDULE"}]
    assert pool.inputs["nodeConfig"]["labels"][GPU_TYPE_LABEL] == "A100-80GB"
    spot = one(stack_with(tmp_path, "staging", spot=True), "gcp:container/nodePool:NodePool", "-gpu")
    assert spot.inputs["nodeConfig"]["spot"] is True


def test_gke_has_no_separate_device_plugin_or_autoscaler_but_eks_has_both(plan_of):
    def releases(stack):
        return {r.name for r in plan_of(stack).resources if r.type == "kubernetes:helm.sh/v3:Release"}

    # staging turns monitoring on on a cluster it creates, so it installs the monitoring stack too.
    assert releases("staging") == {"kuberay-operator", "kube-prometheus-stack"}
    assert releases("local") == {"kuberay-operator", "nvidia-device-plugin"}
    assert releases("eval") == {"kuberay-operator", "nvidia-device-plugin", "cluster-autoscaler"}


def transitive_dependencies(result, key):
    by_key = {r.key: r for r in result.resources}
    children = {}
    for r in result.resources:
        children.setdefault(r.parent, []).append(r.key)
    seen, todo = set(), [key]
    while todo:
        current = by_key[todo.pop()]
        for dep in current.depends_on + ([current.parent] if current.parent else []):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
                todo.extend(children.get(dep, []))  # a component stands for its children
    return seen


@pytest.mark.parametrize("stack", ["eval", "staging"])
def test_workload_comes_after_the_operator(plan_of, stack):
    """The GPU pool is not among the workload's dependencies (tests/test_cluster_layer.py says why)."""
    assert "kubernetes:helm.sh/v3:Release::kuberay-operator" in transitive_dependencies(
        plan_of(stack), "kubernetes:ray.io/v1:RayService::rayservice-qwen2vl")


def test_prod_protects_the_cluster_but_not_the_gpu_pool_staging_nothing(plan_of):
    def protected(stack):
        return {r.key for r in plan_of(stack).resources if r.protect}

    assert "gcp:container/cluster:Cluster::qwen2vl" in protected("prod")
    assert "gcp:container/nodePool:NodePool::qwen2vl-gpu" not in protected("prod")
    assert not protected("staging")
    cluster = one(plan_of("prod"), "gcp:container/cluster:Cluster")
    assert cluster.inputs["deletionProtection"] is True


def test_kubeconfig_is_a_secret_output(plan_of):
    assert plan_of("eval").outputs[output_names.KUBECONFIG] == "[secret]"
    provider = one(plan_of("eval"), "pulumi:providers:kubernetes")
    assert provider.inputs["kubeconfig"] == "[secret]"


def test_existing_cluster_uses_the_configured_context(plan_of):
    provider = one(plan_of("local"), "pulumi:providers:kubernetes")
    assert provider.inputs["context"] == "kind-qwen2vl"
    assert output_names.KUBECONFIG not in plan_of("local").outputs


def test_gpu_the_cloud_does_not_sell_is_a_config_error(tmp_path):
    write_stack(tmp_path, "variant", {"qwen2vl:cloud": "gcp", "qwen2vl:gcpProject": "my-gpu-project",
                                      "qwen2vl:region": "us-central1", "qwen2vl:gpuType": "L40S"})
    result = run_plan("variant", tmp_path)
    assert not result.ok
    assert "qwen2vl:gpuType = 'L40S'" in result.error and "gcp sells no L40S shape" in result.error
    assert "A100-80GB" in result.error and "L4" in result.error
    assert [r.type for r in result.resources] == ["pulumi:pulumi:Stack"]
