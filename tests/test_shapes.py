"""Any Qwen2-VL on the GPU shapes the clouds sell: the shapes planned end to end (config, preflight, placement,
cost) pass or fail for the right reason."""

import pytest

from infra.cost import estimate_cost
from infra.nodepool import node_shape, replicas_per_node, worker_share
from infra.offline.engine import run_plan
from infra.offline.report import plan_document
from tests.conftest import lock_resolving, make_config, write_stack

AWS = {"qwen2vl:cloud": "aws", "qwen2vl:region": "us-east-1", "qwen2vl:storageClass": "gp3"}


def plan(tmp_path, **config):
    write_stack(tmp_path, "shape", {**AWS, **{f"qwen2vl:{k}": str(v) for k, v in config.items()}})
    result = run_plan("shape", tmp_path)
    return result, plan_document(result)


def workers(document):
    return [p for p in document["placement"]["pods"] if "/gpu-worker-" in p["pod"]]


def test_72b_at_tp4_on_g6_48xlarge_runs_two_replicas_a_node(tmp_path):
    result, document = plan(tmp_path, gpuInstanceType="g6.48xlarge", tensorParallelSize=4, gpuNodesMin=1)
    assert result.ok, result.error
    placed = workers(document)
    assert len(placed) == 2 and all(p["pool"] == "gpu" for p in placed)
    assert document["placement"]["serve"][0]["replicas"] == 2  # Serve's floor: 1 node x 2 replicas
    cfg = make_config(cloud="aws", region="us-east-1", gpuInstanceType="g6.48xlarge", gpuNodesMin=1)
    assert replicas_per_node(cfg) == 2 and worker_share(cfg).gpus == 4
    assert estimate_cost(cfg).node_usd_per_hour == 13.3504


def test_7b_awq_at_tp1_on_g6_xlarge(tmp_path, monkeypatch):
    # The catalog knows no 7B revision: the stack names its commit, which the model lock resolves.
    lock_resolving(monkeypatch, "Qwen/Qwen2-VL-7B-Instruct-AWQ", "0123abc" + "0" * 33)
    result, document = plan(tmp_path, gpuInstanceType="g6.xlarge", tensorParallelSize=1,
                            modelRepo="Qwen/Qwen2-VL-7B-Instruct-AWQ", modelRevision="0123abc", maxModelLen=8192)
    assert result.ok, result.error
    assert document["preflight"]["ok"] and document["preflight"]["gpu"] == "L4"
    assert [p["requests"]["nvidia.com/gpu"] for p in workers(document)] == ["1"]


def test_72b_on_p5_48xlarge_with_its_price(tmp_path):
    result, document = plan(tmp_path, gpuType="H100-80GB", tensorParallelSize=8)
    assert result.ok, result.error
    cfg = make_config(cloud="aws", region="us-east-1", gpuType="H100-80GB", tensorParallelSize=8)
    assert node_shape(cfg).instance == "p5.48xlarge"
    cost = estimate_cost(cfg)
    assert cost.node_usd_per_hour == 55.04 and "us-east-1" in cost.source and "2025-06" in cost.source


def test_system_node_c6i_2xlarge_passes(tmp_path):
    result, _ = plan(tmp_path, gpuType="L4", systemInstanceType="c6i.2xlarge")
    assert result.ok, result.error


def test_system_node_t3_small_is_refused_because_the_head_does_not_fit(tmp_path):
    result, _ = plan(tmp_path, gpuType="L4", systemInstanceType="t3.small")
    assert not result.ok
    assert "The Ray head does not fit a t3.small system node (qwen2vl:systemInstanceType)" in result.error
    assert "not a aws machine shape" not in result.error and "pulumi config set qwen2vl:systemInstanceType" in result.error


def test_gpus_the_pinned_vllm_cannot_drive_are_refused_with_the_reason(tmp_path):
    # Marlin needs SM 8.0; a T4 (7.5) runs only the plain AWQ kernel.
    result, _ = plan(tmp_path, gpuType="T4", quantization="awq_marlin")
    assert not result.ok and "Minimum capability: 80. Current capability: 75." in result.error
    # AWQ needs SM 7.5; a V100 (7.0) on a cluster of one's own runs neither kernel.
    write_stack(tmp_path, "v100", {"qwen2vl:cloud": "existing", "qwen2vl:registry": "registry.example.com/ml",
                                   "qwen2vl:gpuType": "V100"})
    result = run_plan("v100", tmp_path)
    assert not result.ok and "Minimum capability: 75. Current capability: 70." in result.error


def test_serve_replicas_and_worker_group_bounds_are_node_bounds_times_replicas_per_node(monkeypatch):
    import yaml

    from infra.workload.manifests import workload_spec
    from infra.workload.objects import workload_objects

    lock_resolving(monkeypatch, "Qwen/Qwen2-VL-7B-Instruct-AWQ", "0123abc" + "0" * 33)
    cfg = make_config(cloud="aws", region="us-east-1", gpuInstanceType="g6.12xlarge", tensorParallelSize=1,
                      modelRepo="Qwen/Qwen2-VL-7B-Instruct-AWQ", modelRevision="0123abc", gpuNodesMin=1,
                      gpuNodesMax=3)
    rayservice = next(o for o in workload_objects(workload_spec(cfg, None)) if o["kind"] == "RayService")
    group = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    scaling = yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"][0]["deployments"][0]
    assert (group["minReplicas"], group["maxReplicas"]) == (4, 12)
    # Serve stops one node (4 replicas) short of the pool: an upgrade's new cluster starts there (NewCluster).
    assert (scaling["autoscaling_config"]["min_replicas"], scaling["autoscaling_config"]["max_replicas"]) == (4, 8)
    container = group["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == group["rayStartParams"]["num-gpus"] == "1"
    assert scaling["ray_actor_options"]["num_gpus"] == 1
    # A quarter of a 48 vCPU / 192 GiB node each, less the quarter kept for the kubelet and DaemonSets.
    assert container["resources"]["requests"]["cpu"] == "9" and container["resources"]["requests"]["memory"] == "36Gi"
    assert scaling["ray_actor_options"]["num_cpus"] <= 9
