"""The Pulumi program: wiring only. Config -> preflight -> cluster -> platform -> workload -> exports."""

import pulumi

from infra import outputs
from infra.capacity.planner import stack_figures
from infra.clusters import create_cluster
from infra.config import ConfigError
from infra.config_reader import load_stack_config, read_secrets
from infra.cost import BudgetExceeded, check_budget
from infra.credentials import endpoint_api_key
from infra.evaluation.reaping import ttl_notice
from infra.platform.device_plugin import NvidiaDevicePlugin
from infra.platform.kuberay import KubeRayOperator
from infra.platform.monitoring import monitoring, monitoring_summary
from infra.platform.survey import offline_note, platform_choice
from infra.placement import PlacementFailed, check_placement
from infra.preflight_gate import ModelLockRequired, PreflightFailed, check_stack, model_lock
from infra.run_mode import deploying, offline_plan
from infra.serving_image import ServingImage
from infra.workload.access import access_commands
from infra.workload.component import ServingWorkload, ServingWorkloadArgs
from infra.workload.manifests import workload_spec
from infra.workload.objects import workload_objects

try:
    cfg = load_stack_config()
    verdict = check_stack(cfg)
    cost = check_budget(cfg)
    lock, lock_warning = model_lock(cfg, deploying())
    # On an existing cluster, what it already runs (KubeRay, the GPU Operator) decides what the stack installs.
    platform = platform_choice(cfg, online=not offline_plan())
    # Every pod the stack creates scheduled, every volume bound, the upgrade tried: before any resource.
    spec = workload_spec(cfg, lock, platform.kuberay_namespace)
    placement = check_placement(cfg, workload_objects(spec))
except (ConfigError, PreflightFailed, BudgetExceeded, ModelLockRequired, PlacementFailed) as error:
    # RunError prints the message alone: a person-readable paragraph, not a traceback.
    raise pulumi.RunError(str(error)) from error
if lock_warning:
    pulumi.log.warn(lock_warning)
if placement.skipped:
    pulumi.log.warn(placement.skipped)
if ttl_notice(cfg):
    pulumi.log.warn(ttl_notice(cfg))
if offline_plan() and offline_note(cfg):
    pulumi.log.warn(offline_note(cfg))
for note in platform.notes:
    pulumi.log.info(note)

secrets = read_secrets()
cluster = create_cluster(cfg)
after_pool = list(cluster.ready)
# Whether the cloud runs the NVIDIA device plugin itself is one fact (infra/platform/addons.py), which the
# placement check reads too; on an existing cluster, whether it runs one already (infra/platform/survey.py).
if platform.install_device_plugin:
    device_plugin = NvidiaDevicePlugin("nvidia-device-plugin", cluster.provider, cluster.placement, after_pool)
    after_pool.append(device_plugin)
# The monitors (the operator's ServiceMonitor, the workload's PodMonitor and rules) need the Prometheus
# operator's CRDs first.
monitoring_ready = monitoring(cfg, cluster.provider, list(cluster.ready))
after_operator = [*after_pool, *monitoring_ready]
if platform.install_kuberay:
    operator = KubeRayOperator("kuberay", cluster.provider, after_operator, protect=cfg.protect,
                               monitoring_release=cfg.monitoring_release)
    after_operator = [operator]

image_ref = pulumi.Output.from_input(cfg.image) if cfg.image else ServingImage(
    "serving-image", cfg, spec.model_dir, secrets.hub_token, cluster.cloud_provider, cluster.cloud_apis).ref
api_key = endpoint_api_key(secrets)
workload = ServingWorkload(
    "qwen2vl",
    ServingWorkloadArgs(spec, cluster.provider, api_key, secrets.hub_token, image_ref, after=after_operator),
)

pulumi.export(outputs.PREFLIGHT, verdict.as_dict())
pulumi.export(outputs.HOURLY_COST_USD, cost.as_dict())
pulumi.export(outputs.CAPACITY, stack_figures(cfg))
pulumi.export(outputs.PLACEMENT, placement.as_dict())
pulumi.export(outputs.CLUSTER_NAME, cluster.name)
pulumi.export(outputs.GPU_POOL, cluster.gpu_pool_name)
if cluster.zones is not None:
    pulumi.export(outputs.CLUSTER_ZONES, cluster.zones)
if cluster.kubeconfig is not None:
    pulumi.export(outputs.KUBECONFIG, cluster.kubeconfig)
pulumi.export(outputs.OPERATOR_VERSION, platform.kuberay_version)
pulumi.export(outputs.PLATFORM, platform.as_dict())
pulumi.export(outputs.MONITORING, monitoring_summary(cfg))
pulumi.export(outputs.NAMESPACE, cfg.namespace)
pulumi.export(outputs.ENDPOINT, workload.endpoint)
pulumi.export(outputs.ACCESS, access_commands(spec))
pulumi.export(outputs.SERVED_MODEL, cfg.served_model_name)
pulumi.export(outputs.MODEL, {"repo": cfg.model_repo, "revision": cfg.model_revision})
pulumi.export(outputs.IMAGE, image_ref)
pulumi.export(outputs.API_KEY, api_key)
pulumi.export(outputs.SMOKE_REPORT, workload.smoke_report)
