"""EKS: a VPC (or the one in config), a system node group and the GPU node group from the pool spec."""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from infra.clusters import ClusterHandle, managed_cluster_handle
from infra.clusters.kubeconfig import exec_kubeconfig
from infra.nodepool import GpuPoolSpec, gpu_pool_spec, system_pool_spec
from infra.config import StackConfig

# The EKS-optimised AMI with NVIDIA drivers and the container toolkit (the device plugin is ours).
GPU_AMI_TYPE = "AL2023_x86_64_NVIDIA"
SYSTEM_AMI_TYPE = "AL2023_x86_64_STANDARD"
VPC_CIDR = "10.42.0.0/16"
SUBNET_COUNT = 2  # EKS needs subnets in at least two availability zones
CLUSTER_POLICIES = ("AmazonEKSClusterPolicy",)
NODE_POLICIES = ("AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryReadOnly")


def autoscaler_tags(pool: GpuPoolSpec, cluster_name: str) -> dict[str, str]:
    """Cluster Autoscaler discovers the group by these tags and, at zero nodes, learns from them what
    a node would offer (labels, taint, GPUs) so it can scale up from nothing."""
    prefix = "k8s.io/cluster-autoscaler"
    tags = {f"{prefix}/enabled": "true", f"{prefix}/{cluster_name}": "owned"}
    tags.update({f"{prefix}/node-template/label/{k}": v for k, v in pool.labels.items()})
    tags[f"{prefix}/node-template/taint/{pool.taint['key']}"] = f"{pool.taint['value']}:{pool.taint['effect']}"
    tags[f"{prefix}/node-template/resources/nvidia.com/gpu"] = str(pool.shape.gpus)
    return tags


def gpu_node_group_args(pool: GpuPoolSpec, cluster_name: str) -> dict:
    """The GPU node group's settings as data, from the cloud-neutral pool spec."""
    return {
        "instance_types": [pool.shape.instance],
        "ami_type": GPU_AMI_TYPE,
        "capacity_type": "SPOT" if pool.spot else "ON_DEMAND",
        "disk_size": pool.disk_gb,
        "labels": dict(pool.labels),
        "taints": [pool.cloud_taint()],
        "scaling": {"min_size": pool.min_nodes, "max_size": pool.max_nodes, "desired_size": max(pool.min_nodes, 1)},
        "tags": {**pool.tags, **autoscaler_tags(pool, cluster_name)},
    }


def kubeconfig(cluster_name: str, endpoint: str, ca_data: str, region: str) -> str:
    """Authenticates with `aws eks get-token`."""
    return exec_kubeconfig(cluster_name, endpoint, ca_data, {
        "command": "aws", "args": ["eks", "get-token", "--cluster-name", cluster_name, "--region", region]})


def _role(name: str, service: str, policies: tuple[str, ...], opts: pulumi.ResourceOptions) -> aws.iam.Role:
    role = aws.iam.Role(
        name,
        assume_role_policy=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
        }),
        opts=opts,
    )
    for policy in policies:
        aws.iam.RolePolicyAttachment(
            f"{name}-{policy}", role=role.name, policy_arn=f"arn:aws:iam::aws:policy/{policy}",
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=role)),
        )
    return role


class EksCluster(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: StackConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("qwen2vl:clusters:EksCluster", name, None, opts)
        pool = gpu_pool_spec(cfg)
        system = system_pool_spec(cfg)
        provider = aws.Provider("aws", region=cfg.region, default_tags={"tags": dict(pool.tags)},
                                opts=pulumi.ResourceOptions(parent=self))
        self.cloud_provider = provider
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        stateful = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(protect=cfg.protect))
        subnet_ids = self._network(name, cfg, child, stateful)

        cluster_role = _role(f"{name}-cluster", "eks.amazonaws.com", CLUSTER_POLICIES, child)
        node_role = _role(f"{name}-nodes", "ec2.amazonaws.com", NODE_POLICIES, child)
        self.cluster = aws.eks.Cluster(
            name,
            role_arn=cluster_role.arn,
            version=cfg.kubernetes_version,
            vpc_config=aws.eks.ClusterVpcConfigArgs(subnet_ids=subnet_ids),
            access_config=aws.eks.ClusterAccessConfigArgs(authentication_mode="API_AND_CONFIG_MAP"),
            opts=stateful,
        )
        aws.eks.NodeGroup(
            f"{name}-system",
            cluster_name=self.cluster.name,
            node_role_arn=node_role.arn,
            subnet_ids=subnet_ids,
            instance_types=[system.instance],
            ami_type=SYSTEM_AMI_TYPE,
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(min_size=system.min_nodes, max_size=system.max_nodes,
                                                              desired_size=system.min_nodes),
            opts=child,
        )
        gpu = gpu_node_group_args(pool, name)
        self.gpu_node_group = aws.eks.NodeGroup(
            f"{name}-{pool.name}",
            cluster_name=self.cluster.name,
            node_role_arn=node_role.arn,
            subnet_ids=subnet_ids,
            instance_types=gpu["instance_types"],
            ami_type=gpu["ami_type"],
            capacity_type=gpu["capacity_type"],
            disk_size=gpu["disk_size"],
            labels=gpu["labels"],
            taints=[aws.eks.NodeGroupTaintArgs(**taint) for taint in gpu["taints"]],
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(**gpu["scaling"]),
            tags=gpu["tags"],
            # The autoscaler owns the node count once the group exists.
            opts=pulumi.ResourceOptions.merge(stateful, pulumi.ResourceOptions(
                ignore_changes=["scalingConfig.desiredSize"])),
        )
        self.kubeconfig = pulumi.Output.secret(pulumi.Output.all(
            self.cluster.name, self.cluster.endpoint, self.cluster.certificate_authority.data
        ).apply(lambda parts: kubeconfig(parts[0], parts[1], parts[2], cfg.region)))
        self.register_outputs({"clusterName": self.cluster.name, "gpuNodeGroup": self.gpu_node_group.node_group_name})

    def _network(self, name: str, cfg: StackConfig, child, stateful) -> pulumi.Input[list[str]]:
        if cfg.subnet_ids:
            return list(cfg.subnet_ids)
        zones = aws.get_availability_zones_output(state="available", opts=pulumi.InvokeOutputOptions(parent=self,
                                                  provider=child.provider))
        names = zones.names if not cfg.zones else pulumi.Output.from_input(list(cfg.zones))
        vpc = aws.ec2.Vpc(f"{name}-vpc", cidr_block=VPC_CIDR, enable_dns_hostnames=True, enable_dns_support=True,
                          opts=stateful)
        gateway = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, opts=child)
        routes = aws.ec2.RouteTable(
            f"{name}-public", vpc_id=vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=gateway.id)], opts=child,
        )
        subnet_ids = []
        for index in range(SUBNET_COUNT):
            subnet = aws.ec2.Subnet(
                f"{name}-public-{index}",
                vpc_id=vpc.id,
                cidr_block=f"10.42.{index * 64}.0/18",
                availability_zone=names.apply(lambda zs, i=index: zs[i % len(zs)]),
                map_public_ip_on_launch=True,
                tags={"kubernetes.io/role/elb": "1"},
                opts=child,
            )
            aws.ec2.RouteTableAssociation(f"{name}-public-{index}", subnet_id=subnet.id, route_table_id=routes.id,
                                          opts=child)
            subnet_ids.append(subnet.id)
        return subnet_ids


def create(cfg: StackConfig) -> ClusterHandle:
    eks = EksCluster("qwen2vl", cfg)
    return managed_cluster_handle(cfg, eks, eks.cluster.name, eks.gpu_node_group, eks.gpu_node_group.node_group_name,
                                  provides_device_plugin=False)
