"""EKS: a VPC (or the subnets in config), the managed add-ons the workload needs, a system node group and
the GPU node group from the pool spec, each node group on a launch template that tags what it bills."""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.clusters import ClusterHandle, managed_cluster_handle, storage_class_resource
from infra.clusters.kubeconfig import exec_kubeconfig
from infra.clusters.quota import enforce_gpu_quota
from infra.config import StackConfig
from infra.nodepool import EKS_MIN_ZONES, GpuPoolSpec, eks_zone_choice, gpu_pool_spec, system_pool_spec
from infra.platform.addons import CLUSTER_AUTOSCALER_SERVICE_ACCOUNT, EBS_CSI_CONTROLLER_SERVICE_ACCOUNT, \
    GP3_STORAGE_CLASS, eks_managed_addons
from infra.platform.cluster_autoscaler import ClusterAutoscaler

# The EKS-optimised AMI with NVIDIA drivers and the container toolkit (the device plugin is ours).
GPU_AMI_TYPE = "AL2023_x86_64_NVIDIA"
SYSTEM_AMI_TYPE = "AL2023_x86_64_STANDARD"
# The root volume of AL2023 EKS AMIs.
ROOT_DEVICE = "/dev/xvda"
VPC_CIDR = "10.42.0.0/16"
# By type token for the reason EC2_TYPES gives: EC2's instance-type offerings, by zone ID.
INSTANCE_TYPE_OFFERINGS = "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings"
CLUSTER_POLICIES = ("AmazonEKSClusterPolicy",)
NODE_POLICIES = ("AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryReadOnly")
EBS_CSI_POLICY = "service-role/AmazonEBSCSIDriverPolicy"
CLUSTER_ADMIN_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
# Control-plane logs to CloudWatch Logs: who called the API and what it changed, and IAM authentication
# (https://docs.aws.amazon.com/eks/latest/userguide/control-plane-logs.html; billed as CloudWatch Logs
# ingestion and storage, docs/clusters/aws.md).
CONTROL_PLANE_LOG_TYPES = ("api", "audit", "authenticator")
# Envelope encryption of Kubernetes Secrets with a KMS key of the stack
# (https://docs.aws.amazon.com/eks/latest/userguide/envelope-encryption.html).
ENCRYPTED_RESOURCES = ("secrets",)
# KMS waits 7 to 30 days before it deletes a key (kms ScheduleKeyDeletion PendingWindowInDays).
KEY_DELETION_DAYS = {"protected": 30, "unprotected": 7}
# EKS Pod Identity: the agent add-on hands pods of an associated service account the role's credentials;
# the role trusts this service principal (https://docs.aws.amazon.com/eks/latest/userguide/pod-id-role.html).
POD_IDENTITY_PRINCIPAL = "pods.eks.amazonaws.com"
# What a launch template's tags reach: the instance, its volumes and its network interfaces
# (EC2 CreateLaunchTemplate TagSpecifications). Node-group `tags` reach none of them
# (https://docs.aws.amazon.com/eks/latest/userguide/eks-using-tags.html).
TAGGED_RESOURCES = ("instance", "volume", "network-interface")
# pulumi_aws.ec2's package __init__ imports its ~250 resource modules (about 1 s of CPU, a fifth of the offline
# plan's 5 s budget), so the few EC2 resources of this stack are registered by type token, with the inputs
# in the provider's own (camelCase) names: pulumi_aws 7.51.1 ec2/*.py, held to that source by
# tests/test_cluster_layer.py. Same provider, same engine calls as the SDK classes make.
EC2_TYPES = {
    "Vpc": "aws:ec2/vpc:Vpc",
    "InternetGateway": "aws:ec2/internetGateway:InternetGateway",
    "RouteTable": "aws:ec2/routeTable:RouteTable",
    "RouteTableAssociation": "aws:ec2/routeTableAssociation:RouteTableAssociation",
    "Subnet": "aws:ec2/subnet:Subnet",
    "Eip": "aws:ec2/eip:Eip",
    "NatGateway": "aws:ec2/natGateway:NatGateway",
    "LaunchTemplate": "aws:ec2/launchTemplate:LaunchTemplate",
}


def _version(number: float) -> str:
    """A launch template version as EKS takes it ("3"); the engine hands numbers back as floats (3.0)."""
    return str(int(number))


def _ec2(kind: str, name: str, inputs: dict, opts: pulumi.ResourceOptions,
         outputs: tuple[str, ...] = ()) -> pulumi.CustomResource:
    """An EC2 resource by type token; `outputs` names the provider-computed properties read back."""
    return pulumi.CustomResource(EC2_TYPES[kind], name, {**inputs, **{key: None for key in outputs}}, opts)


def gpu_node_group_args(pool: GpuPoolSpec) -> dict:
    """The GPU node group's settings as data, from the cloud-neutral pool spec."""
    return {
        "instance_types": [pool.shape.instance],
        "ami_type": GPU_AMI_TYPE,
        "capacity_type": "SPOT" if pool.spot else "ON_DEMAND",
        "labels": pool.node_labels,
        "taints": [pool.cloud_taint()],
        # Created at gpuNodesMin (0: no GPU node until a GPU pod is pending); Cluster Autoscaler owns the
        # count afterwards, between min and max.
        "scaling": {"min_size": pool.min_nodes, "max_size": pool.max_nodes, "desired_size": pool.min_nodes},
    }


def launch_template_inputs(disk_gb: int, tags: dict[str, str]) -> dict:
    """A launch template for a managed node group: its root volume (a node group with a launch template takes
    no disk_size) and the cost tags on everything an instance bills."""
    return {
        "blockDeviceMappings": [{"deviceName": ROOT_DEVICE, "ebs": {
            "volumeSize": disk_gb, "volumeType": "gp3", "encrypted": "true", "deleteOnTermination": "true"}}],
        "tagSpecifications": [{"resourceType": kind, "tags": dict(tags)} for kind in TAGGED_RESOURCES],
        # IMDSv2 only, and a hop limit of 2 so pods on the node (the CNI, the CSI node plugin) reach it.
        "metadataOptions": {"httpEndpoint": "enabled", "httpTokens": "required", "httpPutResponseHopLimit": 2},
    }


def volume_tag_parameters(tags: dict[str, str]) -> dict[str, str]:
    """StorageClass parameters that make the EBS CSI driver tag each volume it creates with the stack's cost
    tags (aws-ebs-csi-driver docs/tagging.md, "StorageClass Tagging": tagSpecification_<n>: "key=value"), so a
    model volume left behind by a failed destroy is traceable to its stack."""
    return {f"tagSpecification_{index}": f"{key}={value}"
            for index, (key, value) in enumerate(sorted(tags.items()), start=1)}


def cluster_autoscaler_policy(cluster_name: str) -> str:
    """The IAM policy Cluster Autoscaler needs (kubernetes/autoscaler cluster-autoscaler/cloudprovider/aws/
    README.md, "IAM Policy" and "Auto-Discovery Setup"; eks:DescribeNodegroup gives it a group's labels and
    taints at zero nodes, kubernetes/autoscaler#4491). It may resize only this cluster's groups, which EKS tags
    k8s.io/cluster-autoscaler/<cluster name> (https://docs.aws.amazon.com/eks/latest/userguide/managed-node-groups.html)."""
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Resource": "*", "Action": [
            "autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeAutoScalingInstances",
            "autoscaling:DescribeLaunchConfigurations", "autoscaling:DescribeScalingActivities",
            "autoscaling:DescribeTags", "ec2:DescribeImages", "ec2:DescribeInstanceTypes",
            "ec2:DescribeLaunchTemplateVersions", "ec2:GetInstanceTypesFromInstanceRequirements",
            "eks:DescribeNodegroup"]},
        {"Effect": "Allow", "Resource": "*",
         "Action": ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"],
         "Condition": {"StringEquals": {f"aws:ResourceTag/k8s.io/cluster-autoscaler/{cluster_name}": "owned"}}},
    ]}, sort_keys=True)


def endpoint_access(cfg: StackConfig) -> dict:
    """The API endpoint: public for kubectl and pulumi, limited to apiAllowedCidrs (empty = anywhere, as EKS's
    own default), and private too, so nodes reach the API inside the VPC instead of through the NAT gateway
    (https://docs.aws.amazon.com/eks/latest/userguide/cluster-endpoint.html)."""
    return {"endpoint_public_access": True, "endpoint_private_access": True,
            "public_access_cidrs": list(cfg.api_allowed_cidrs) or ["0.0.0.0/0"]}


def kubeconfig(cluster_name: str, endpoint: str, ca_data: str, region: str, profile: str | None = None,
               role_arn: str | None = None) -> str:
    """Authenticates with `aws eks get-token`, as the same profile and role as the stack's AWS provider: a
    token minted for another principal is Unauthorized."""
    args = ["eks", "get-token", "--cluster-name", cluster_name, "--region", region]
    if role_arn:
        args += ["--role-arn", role_arn]
    user: dict = {"command": "aws", "args": args}
    if profile:
        user["env"] = [{"name": "AWS_PROFILE", "value": profile}]
    return exec_kubeconfig(cluster_name, endpoint, ca_data, user)


def _assume_role_policy(service: str, actions: tuple[str, ...] = ("sts:AssumeRole",)) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": service}, "Action": list(actions)}]})


def _role(name: str, service: str, policies: tuple[str, ...], opts: pulumi.ResourceOptions,
          actions: tuple[str, ...] = ("sts:AssumeRole",)) -> tuple[aws.iam.Role, list[aws.iam.RolePolicyAttachment]]:
    """A role and its policy attachments; what uses the role depends on the attachments, so it is created after
    them and deleted before them (pulumi_aws 7.51.1 eks/cluster.py and eks/node_group.py examples)."""
    role = aws.iam.Role(name, assume_role_policy=_assume_role_policy(service, actions), opts=opts)
    attachments = [aws.iam.RolePolicyAttachment(
        f"{name}-{policy.rsplit('/', 1)[-1]}", role=role.name, policy_arn=f"arn:aws:iam::aws:policy/{policy}",
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=role)),
    ) for policy in policies]
    return role, attachments


class EksCluster(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: StackConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("qwen2vl:clusters:EksCluster", name, None, opts)
        pool = gpu_pool_spec(cfg)
        system = system_pool_spec(cfg)
        assume_roles = [aws.ProviderAssumeRoleArgs(role_arn=cfg.aws_role_arn)] if cfg.aws_role_arn else None
        provider = aws.Provider("aws", region=cfg.region, profile=cfg.aws_profile, assume_roles=assume_roles,
                                default_tags={"tags": dict(pool.tags)}, opts=pulumi.ResourceOptions(parent=self))
        self.cloud_provider = provider
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        stateful = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(protect=cfg.protect))
        # At `pulumi up`, before anything that bills (the NAT gateway, the cluster, the nodes): refuse when the
        # account's GPU quota is too small.
        enforce_gpu_quota(cfg, pulumi.InvokeOptions(parent=self, provider=provider))
        self.zone_choice: pulumi.Output[dict] | None = None
        subnet_ids = self._network(name, cfg, child, stateful)
        cluster_role, cluster_policies = _role(f"{name}-cluster", "eks.amazonaws.com", CLUSTER_POLICIES, child)
        node_role, node_policies = _role(f"{name}-nodes", "ec2.amazonaws.com", NODE_POLICIES, child)
        after_node_policies = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=node_policies))
        # Protected with the cluster: without the key EKS cannot decrypt the cluster's Secrets.
        self.secrets_key = aws.kms.Key(
            f"{name}-secrets", description=f"qwen2vl {cfg.stack}: EKS Secrets envelope encryption",
            enable_key_rotation=True,
            deletion_window_in_days=KEY_DELETION_DAYS["protected" if cfg.protect else "unprotected"], opts=stateful)
        self.cluster = aws.eks.Cluster(
            name,
            role_arn=cluster_role.arn,
            version=cfg.kubernetes_version,
            # STANDARD: at the end of standard support EKS upgrades the cluster instead of moving it into
            # extended support at $0.60 instead of $0.10 per cluster-hour
            # (https://docs.aws.amazon.com/eks/latest/userguide/view-upgrade-policy.html).
            upgrade_policy=aws.eks.ClusterUpgradePolicyArgs(support_type="STANDARD"),
            vpc_config=aws.eks.ClusterVpcConfigArgs(subnet_ids=subnet_ids, **endpoint_access(cfg)),
            enabled_cluster_log_types=list(CONTROL_PLANE_LOG_TYPES),
            encryption_config=aws.eks.ClusterEncryptionConfigArgs(
                provider=aws.eks.ClusterEncryptionConfigProviderArgs(key_arn=self.secrets_key.arn),
                resources=list(ENCRYPTED_RESOURCES)),
            access_config=aws.eks.ClusterAccessConfigArgs(authentication_mode="API_AND_CONFIG_MAP",
                                                          bootstrap_cluster_creator_admin_permissions=True),
            opts=pulumi.ResourceOptions.merge(stateful, pulumi.ResourceOptions(depends_on=cluster_policies)),
        )
        for index, principal in enumerate(cfg.admin_principals):
            entry = aws.eks.AccessEntry(f"{name}-admin-{index}", cluster_name=self.cluster.name,
                                        principal_arn=principal, type="STANDARD", opts=child)
            aws.eks.AccessPolicyAssociation(
                f"{name}-admin-{index}", cluster_name=self.cluster.name, principal_arn=principal,
                policy_arn=CLUSTER_ADMIN_POLICY, access_scope={"type": "cluster"},
                opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(parent=entry)))

        self.system_node_group = self._node_group(
            f"{name}-{system.name}", node_role, subnet_ids, system.tags, pool.disk_gb, after_node_policies,
            instance_types=[system.instance], ami_type=SYSTEM_AMI_TYPE,
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(min_size=system.min_nodes, max_size=system.max_nodes,
                                                              desired_size=system.min_nodes),
        )
        gpu = gpu_node_group_args(pool)
        self.gpu_node_group = self._node_group(
            f"{name}-{pool.name}", node_role, subnet_ids, pool.tags, pool.disk_gb,
            # Cattle, not protected even in prod: a gpuType change replaces it, old group first, so the
            # GPU quota never has to hold both.
            pulumi.ResourceOptions.merge(after_node_policies, pulumi.ResourceOptions(
                delete_before_replace=True, ignore_changes=["scalingConfig.desiredSize"])),
            instance_types=gpu["instance_types"], ami_type=gpu["ami_type"], capacity_type=gpu["capacity_type"],
            labels=gpu["labels"], taints=[aws.eks.NodeGroupTaintArgs(**taint) for taint in gpu["taints"]],
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(**gpu["scaling"]),
        )
        self.addons = self._addons(name, child)
        self.autoscaler_role, _ = _role(f"{name}-cluster-autoscaler", POD_IDENTITY_PRINCIPAL, (), child,
                                        ("sts:AssumeRole", "sts:TagSession"))
        aws.iam.RolePolicy(
            f"{name}-cluster-autoscaler", role=self.autoscaler_role.id,
            policy=self.cluster.name.apply(cluster_autoscaler_policy),
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(parent=self.autoscaler_role)))
        self.autoscaler_identity = aws.eks.PodIdentityAssociation(
            f"{name}-cluster-autoscaler", cluster_name=self.cluster.name,
            namespace=CLUSTER_AUTOSCALER_SERVICE_ACCOUNT[0], service_account=CLUSTER_AUTOSCALER_SERVICE_ACCOUNT[1],
            role_arn=self.autoscaler_role.arn, opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
                depends_on=[self.addons["eks-pod-identity-agent"]])))
        self.kubeconfig = pulumi.Output.secret(pulumi.Output.all(
            self.cluster.name, self.cluster.endpoint, self.cluster.certificate_authority.data
        ).apply(lambda parts: kubeconfig(parts[0], parts[1], parts[2], cfg.region, cfg.aws_profile, cfg.aws_role_arn)))
        self.register_outputs({"clusterName": self.cluster.name, "gpuNodeGroup": self.gpu_node_group.node_group_name})

    def _node_group(self, name: str, node_role: aws.iam.Role, subnet_ids, tags: dict[str, str], disk_gb: int,
                    opts: pulumi.ResourceOptions, **args) -> aws.eks.NodeGroup:
        # The template takes only the parent and provider: the group's replacement and ignore_changes options
        # are about the group.
        template = _ec2("LaunchTemplate", name, launch_template_inputs(disk_gb, tags),
                        pulumi.ResourceOptions(parent=opts.parent, provider=opts.provider), ("latestVersion",))
        return aws.eks.NodeGroup(
            name, cluster_name=self.cluster.name, node_role_arn=node_role.arn, subnet_ids=subnet_ids,
            launch_template=aws.eks.NodeGroupLaunchTemplateArgs(id=template.id,
                                                                version=template.latestVersion.apply(_version)),
            tags=dict(tags), opts=opts, **args)

    def _addons(self, name: str, child: pulumi.ResourceOptions) -> dict[str, aws.eks.Addon]:
        """The managed add-ons of infra/platform/addons.py, after the system nodes that run their pods."""
        ebs_role, ebs_policies = _role(f"{name}-ebs-csi", POD_IDENTITY_PRINCIPAL, (EBS_CSI_POLICY,), child,
                                       ("sts:AssumeRole", "sts:TagSession"))
        after_nodes = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[self.system_node_group]))
        addons: dict[str, aws.eks.Addon] = {}
        for addon in eks_managed_addons():
            identity = None
            if addon.name == "aws-ebs-csi-driver":
                identity = [aws.eks.AddonPodIdentityAssociationArgs(
                    role_arn=ebs_role.arn, service_account=EBS_CSI_CONTROLLER_SERVICE_ACCOUNT[1])]
            depends = [addons[n] for n in addon.after] + (ebs_policies if identity else [])
            addons[addon.name] = aws.eks.Addon(
                f"{name}-{addon.name}", cluster_name=self.cluster.name, addon_name=addon.name,
                configuration_values=json.dumps(addon.configuration, sort_keys=True) if addon.configuration else None,
                # EKS installs vpc-cni itself; the managed add-on takes its settings over.
                resolve_conflicts_on_create="OVERWRITE", pod_identity_associations=identity,
                opts=pulumi.ResourceOptions.merge(after_nodes, pulumi.ResourceOptions(depends_on=depends)))
        return addons

    def _zone_choice(self, cfg: StackConfig, provider) -> pulumi.Output[dict]:
        """infra/nodepool.py eks_zone_choice over what this account answers: its zones' names and IDs, and the
        zone IDs that offer the GPU instance type."""
        invoke = pulumi.InvokeOutputOptions(parent=self, provider=provider)
        zones = aws.get_availability_zones_output(state="available", opts=invoke)
        offerings = pulumi.runtime.invoke_output(INSTANCE_TYPE_OFFERINGS, {
            "locationType": "availability-zone-id",
            "filters": [{"name": "instance-type", "values": [gpu_pool_spec(cfg).shape.instance]}]}, invoke)
        return pulumi.Output.all(zones.names, zones.zone_ids, offerings).apply(
            lambda parts: eks_zone_choice(cfg, parts[0], parts[1], parts[2].get("locations") or []))

    def _network(self, name: str, cfg: StackConfig, child, stateful) -> pulumi.Input[list[str]]:
        if cfg.subnet_ids:
            return list(cfg.subnet_ids)
        self.zone_choice = self._zone_choice(cfg, child.provider)
        names = self.zone_choice.apply(lambda choice: choice["zones"])
        vpc = _ec2("Vpc", f"{name}-vpc", {"cidrBlock": VPC_CIDR, "enableDnsHostnames": True,
                                            "enableDnsSupport": True}, stateful)
        gateway = _ec2("InternetGateway", f"{name}-igw", {"vpcId": vpc.id}, child)
        public_routes = _ec2("RouteTable", f"{name}-public", {
            "vpcId": vpc.id, "routes": [{"cidrBlock": "0.0.0.0/0", "gatewayId": gateway.id}]}, child)
        public = [self._subnet(f"{name}-public-{i}", vpc, names, i, i, public_routes, True, child)
                  for i in range(EKS_MIN_ZONES)]
        if cfg.public_nodes:
            return [subnet.id for subnet in public]
        # Nodes without public IPs reach the hub, ECR and the EKS endpoint through one NAT gateway.
        address = _ec2("Eip", f"{name}-nat", {"domain": "vpc"}, child)
        # A public NAT gateway created before the internet gateway is attached to the VPC fails
        # (Gateway.NotAttached); pulumi_aws 7.51.1 ec2/nat_gateway.py's example depends on the gateway.
        nat = _ec2("NatGateway", f"{name}-nat", {"allocationId": address.id, "subnetId": public[0].id},
                   pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[gateway])))
        private_routes = _ec2("RouteTable", f"{name}-private", {
            "vpcId": vpc.id, "routes": [{"cidrBlock": "0.0.0.0/0", "natGatewayId": nat.id}]}, child)
        return [self._subnet(f"{name}-private-{i}", vpc, names, i, EKS_MIN_ZONES + i, private_routes, False, child).id
                for i in range(EKS_MIN_ZONES)]

    @staticmethod
    def _subnet(name: str, vpc, zone_names, zone_index: int, block: int, routes, public: bool,
                child) -> pulumi.CustomResource:
        subnet = _ec2("Subnet", name, {
            "vpcId": vpc.id, "cidrBlock": f"10.42.{block * 64}.0/18",
            "availabilityZone": zone_names.apply(lambda zs: zs[zone_index]),
            "mapPublicIpOnLaunch": public,
            # Load balancers: internet-facing ones in public subnets, internal ones in private subnets.
            "tags": {"kubernetes.io/role/elb" if public else "kubernetes.io/role/internal-elb": "1"},
        }, child)
        _ec2("RouteTableAssociation", name, {"subnetId": subnet.id, "routeTableId": routes.id}, child)
        return subnet


def create(cfg: StackConfig) -> ClusterHandle:
    eks = EksCluster("qwen2vl", cfg)
    handle = managed_cluster_handle(
        cfg, eks, eks.cluster.name, eks.gpu_node_group.node_group_name,
        system_nodes=[eks.system_node_group, *eks.addons.values()], zones=eks.zone_choice)
    k8s_child = pulumi.ResourceOptions(parent=eks, provider=handle.provider)
    # The model volume's class: the EBS CSI driver's gp3 (EKS >= 1.30 makes no default class, and gp2's in-tree
    # provisioner is served only by this driver: https://docs.aws.amazon.com/eks/latest/userguide/ebs-csi-migration-faq.html).
    storage_class = storage_class_resource(GP3_STORAGE_CLASS, volume_tag_parameters(cfg.labels),
                                           pulumi.ResourceOptions.merge(k8s_child, pulumi.ResourceOptions(
                                               depends_on=[eks.addons["aws-ebs-csi-driver"]])))
    handle.ready.append(storage_class)
    ClusterAutoscaler("cluster-autoscaler", handle.provider, eks.cluster.name, cfg.region,
                      after=[eks.autoscaler_identity, eks.system_node_group])
    return handle
