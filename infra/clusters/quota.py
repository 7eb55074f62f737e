"""The account quota a GPU pool needs, checked before the bill: at `pulumi up` the cluster module reads it
before it registers anything that bills, and the program refuses, naming the number it needs and how to
request it; the offline plan and `pulumi preview` only say what `up` will check (they read no account).

Why at all: the GPU pool starts at gpuNodesMin (often 0) and its nodes come from the autoscaler, so without
this a missing quota shows up only as a GPU worker that stays Pending (the smoke gate then names the
autoscaler's FailedScaleUp: images/vllm/qwen2vl_serve/scale_up_watch.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from infra.catalog import catalog_path, instance_type
from infra.catalog.files import load
from infra.config import StackConfig
from infra.nodepool import node_shape

AWS_QUOTA_INVOKE = "aws:servicequotas/getServiceQuota:getServiceQuota"
GCP_QUOTA_INVOKE = "gcp:cloudquota/getSQuotaInfo:getSQuotaInfo"
GCP_QUOTA_SERVICE = "compute.googleapis.com"


@dataclass(frozen=True)
class QuotaNeed:
    cloud: str
    quota: str  # AWS quota code or GCP quota id
    name: str
    unit: str  # "vCPUs" or "GPUs"
    needed: int
    why: str
    region: str  # "global" for a project-wide quota

    def request_hint(self, project: str | None) -> str:
        if self.cloud == "aws":
            return (f"`aws service-quotas request-service-quota-increase --service-code ec2 --quota-code {self.quota} "
                    f"--desired-value {self.needed} --region {self.region}` (or the Service Quotas console)")
        dimension = "" if self.region == "global" else f" --dimensions=region={self.region}"
        return (f"`gcloud beta quotas preferences create --service={GCP_QUOTA_SERVICE} --quota-id={self.quota} "
                f"--preferred-value={self.needed}{dimension} --project={project}` (or IAM & Admin > Quotas)")

    def describe(self) -> str:
        where = "project-wide" if self.region == "global" else f"in {self.region}"
        return f"{self.quota} \"{self.name}\" {where} of at least {self.needed} {self.unit} ({self.why})"


def _facts() -> dict:
    return load("gpu_quotas")


def gpu_quota_needs(cfg: StackConfig) -> tuple[list[QuotaNeed], str | None]:
    """The quotas the GPU pool at gpuNodesMax needs, and a note when one is not known to this table."""
    shape = node_shape(cfg)
    if shape is None:
        return [], None
    capacity = "spot" if cfg.spot else "on_demand"
    if cfg.cloud == "aws":
        family = re.match(r"[a-z]+", shape.instance).group(0)
        entry = _facts()["aws"].get("g" if family in ("g", "vt") else family, {}).get(capacity)
        if entry is None:
            return [], f"no {capacity} quota code known for {shape.instance} ({catalog_path('gpu_quotas')}): check it by hand"
        vcpus = instance_type("aws", shape.instance).vcpus
        return [QuotaNeed("aws", entry["code"], entry["name"], "vCPUs", cfg.gpu_nodes_max * vcpus,
                          f"gpuNodesMax {cfg.gpu_nodes_max} x {vcpus} vCPUs of {shape.instance}", cfg.region)], None
    facts = _facts()["gcp"]
    entry = facts.get(shape.accelerator, {}).get(capacity)
    gpus = cfg.gpu_nodes_max * shape.gpus
    why = f"gpuNodesMax {cfg.gpu_nodes_max} x {shape.gpus} {shape.accelerator} of {shape.instance}"
    needs = [QuotaNeed("gcp", facts["all_regions"]["quota_id"], facts["all_regions"]["name"], "GPUs", gpus, why,
                       "global")]
    if entry is None:
        return needs, f"no {capacity} quota id known for {shape.accelerator} ({catalog_path('gpu_quotas')}): check it by hand"
    return [QuotaNeed("gcp", entry["quota_id"], entry["name"], "GPUs", gpus, why, cfg.region), *needs], None


def plan_notice(cfg: StackConfig) -> str | None:
    """What `pulumi up` will check, for the plan and preview (which read no account)."""
    needs, unknown = gpu_quota_needs(cfg)
    if not needs and not unknown:
        return None
    short = ", ".join(f"{need.quota} >= {need.needed} {need.unit}" for need in needs) or "nothing known"
    checks = "; ".join(need.describe() for need in needs)
    return (f"`pulumi up` checks GPU quota {short} before creating the cluster; this plan reads no account. "
            f"It checks {checks or 'nothing'}" + (f"; {unknown}" if unknown else "") + ".")


def gcp_quota_value(info: dict, need: QuotaNeed) -> float:
    """The value in effect for the need's region from a Cloud Quotas QuotaInfo (a region's own
    dimensionsInfo first, else the default one that applies there); -1 means unlimited."""
    infos = info.get("dimensionsInfos") or []
    exact = [i for i in infos if (i.get("dimensions") or {}).get("region") == need.region]
    default = [i for i in infos if "region" not in (i.get("dimensions") or {})
               and (need.region in (i.get("applicableLocations") or []) or "global" in (i.get("applicableLocations") or [])
                    or need.region == "global")]
    chosen = (exact or default or [{}])[0]
    details = chosen.get("details") or [{}]
    if isinstance(details, dict):
        details = [details]
    value = details[0].get("value")
    return float(value) if value is not None else 0.0


def quota_refusal(need: QuotaNeed, value: float, project: str | None = None) -> str | None:
    if value < 0 or value >= need.needed:
        return None
    return (f"The account's quota {need.quota} \"{need.name}\" {'project-wide' if need.region == 'global' else 'in ' + need.region} "
            f"is {value:g} {need.unit}; this stack needs {need.needed} ({need.why}), so the GPU node would never start. "
            f"Nothing GPU-related was created. Request {need.needed} with {need.request_hint(project)}, or lower "
            f"gpuNodesMax. Other instances of the family in this account and region count against it too.")



def enforce_gpu_quota(cfg: StackConfig, invoke: "pulumi.InvokeOptions") -> None:
    """At `pulumi up`, before the cluster and its pools are registered: read the account's quotas for the GPU
    pool through the stack's cloud provider and refuse (pulumi.RunError, nothing GPU-related created) when one
    is too small. A quota that cannot be read (a project whose Cloud Quotas API is still off, a role without
    servicequotas:GetServiceQuota) is a warning, not a refusal. Nothing is read in a plan or preview (the
    caller warns with plan_notice instead)."""
    import pulumi

    from infra import run_mode

    needs, _ = gpu_quota_needs(cfg)
    if not run_mode.deploying():
        return
    for need in needs:
        try:
            if need.cloud == "aws":
                answer = pulumi.runtime.invoke(AWS_QUOTA_INVOKE, {"serviceCode": "ec2", "quotaCode": need.quota},
                                               invoke).value
                value = float(answer.get("value") or 0)
            else:
                answer = pulumi.runtime.invoke(GCP_QUOTA_INVOKE, {
                    "parent": f"projects/{cfg.gcp_project}", "service": GCP_QUOTA_SERVICE, "quotaId": need.quota},
                    invoke).value
                value = gcp_quota_value(answer, need)
        except Exception as error:  # noqa: BLE001 -- an unreadable quota is reported, never guessed
            pulumi.log.warn(f"could not read the GPU quota {need.describe()}: {error}; check it by hand")
            continue
        refusal = quota_refusal(need, value, cfg.gcp_project)
        if refusal:
            raise pulumi.RunError(refusal)
