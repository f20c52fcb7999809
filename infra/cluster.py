"""EKS control plane, its system managed node group and the Kubernetes provider.

Authentication is API mode (access entries, no aws-auth ConfigMap); secrets are
envelope-encrypted with a customer KMS key; every control-plane log type is on.
The system node group is small, on-demand and tainted CriticalAddonsOnly: it
runs Karpenter, CoreDNS and the add-ons, never workloads. Every Kubernetes child
of this program uses `self.k8s_provider`, never an ambient kubeconfig.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_eks as eks
import pulumi_kubernetes as k8s

from domain import contract, versions
from infra.identity import pod_identity_trust_policy

EBS_CSI_POLICY = "arn:aws:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"
CLUSTER_ADMIN_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
NODE_MANAGED_POLICIES = (
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryPullOnly",
    "AmazonSSMManagedInstanceCore",
)


@dataclass(frozen=True)
class SystemNodes:
    """The on-demand managed node group that runs Karpenter, CoreDNS and the add-ons."""

    instance_types: tuple[str, ...]
    min_size: int
    desired_size: int
    max_size: int
    disk_gib: int


@dataclass(frozen=True)
class ClusterArgs:
    name: str
    version: str  # Kubernetes minor version, e.g. "1.33"
    vpc_id: pulumi.Input[str]
    public_subnet_ids: pulumi.Input[list[str]]
    private_subnet_ids: pulumi.Input[list[str]]
    tags: dict[str, str]
    system_nodes: SystemNodes
    endpoint_public_access: bool
    public_access_cidrs: tuple[str, ...]  # who may call the public endpoint; () without one
    # Sources of one 443 rule each to the private endpoint (cluster.privateAccess).
    private_access_cidrs: tuple[str, ...]
    private_access_security_group_ids: tuple[str, ...]
    log_types: tuple[str, ...]
    log_retention_days: int
    admin_role_arns: tuple[str, ...]
    deletion_protection: bool


def node_role_policy_arns(partition: str = "aws") -> list[str]:
    return [f"arn:{partition}:iam::aws:policy/{name}" for name in NODE_MANAGED_POLICIES]


def ec2_assume_role_policy() -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
            ],
        }
    )


def node_monitoring_configuration() -> dict:
    """`configurationValues` of the EKS node monitoring agent add-on (schema vendored in schemas/).

    The agent sets node conditions (AcceleratedHardwareReady, KernelReady, ...) that
    Karpenter's NodeRepair replaces a node for (AcceleratedHardwareReady False for
    10 minutes, Karpenter v1.14.1 website/content/en/docs/concepts/disruption.md).
    Its node agent tolerates every taint by default (chart values
    `nodeAgent.tolerations: [{operator: Exists}]`); its DCGM server, which the GPU
    checks read, tolerates none (`dcgmAgent.tolerations: []`), so it gets the
    GPU pools' taints here, or it would never run on a GPU node.
    """
    return {
        "nodeAgent": {"tolerations": [{"operator": "Exists"}]},
        "dcgmAgent": {"tolerations": contract.gpu_daemon_tolerations()},
    }


class Cluster(pulumi.ComponentResource):
    def __init__(self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gpuinf:cluster:Cluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.cluster_name = args.name

        self.secrets_key = aws.kms.Key(
            f"{name}-secrets",
            description=f"EKS secrets envelope encryption for {args.name}",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            opts=child,
        )
        aws.kms.Alias(
            f"{name}-secrets-alias", name=f"alias/eks/{args.name}", target_key_id=self.secrets_key.key_id, opts=child
        )
        # Created up front so retention is ours; EKS would otherwise create it with no expiry.
        self.log_group = aws.cloudwatch.LogGroup(
            f"{name}-control-plane-logs",
            name=f"/aws/eks/{args.name}/cluster",
            retention_in_days=args.log_retention_days,
            opts=child,
        )
        self.eks = eks.Cluster(
            f"{name}-eks",
            name=args.name,
            version=args.version,
            vpc_id=args.vpc_id,
            public_subnet_ids=args.public_subnet_ids,
            private_subnet_ids=args.private_subnet_ids,
            node_associate_public_ip_address=False,
            endpoint_private_access=True,
            endpoint_public_access=args.endpoint_public_access,
            public_access_cidrs=list(args.public_access_cidrs) or None,
            authentication_mode=eks.AuthenticationMode.API,
            access_entries=self._admin_entries(args),
            create_oidc_provider=True,
            encryption_config_key_arn=self.secrets_key.arn,
            enabled_cluster_log_types=list(args.log_types),
            deletion_protection=args.deletion_protection,
            # Nodes come from the managed group below and Karpenter, never from the component.
            skip_default_node_group=True,
            # Nodes share the EKS-created cluster security group, which Karpenter discovers by tag.
            skip_default_security_groups=True,
            # CoreDNS is created below, once the system nodes it runs on exist: an add-on
            # with no node to run on stays DEGRADED and blocks the update.
            coredns_addon_options=eks.CoreDnsAddonOptionsArgs(enabled=False),
            # The VPC CNI's network policy agent enforces the workloads' NetworkPolicies;
            # without it the API server accepts them and nothing enforces them.
            vpc_cni_options=eks.VpcCniOptionsArgs(enable_network_policy=True),
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.log_group]),
        )
        self.cluster_security_group_id = self.eks.cluster_security_group_id
        self.oidc_provider_arn = self.eks.oidc_provider_arn
        self.kubeconfig = pulumi.Output.secret(self.eks.kubeconfig_json)

        # Karpenter's EC2NodeClass selects this group by tag (see contract.DISCOVERY_TAG).
        aws.ec2.Tag(
            f"{name}-sg-discovery",
            resource_id=self.cluster_security_group_id,
            key=contract.DISCOVERY_TAG,
            value=args.name,
            opts=child,
        )
        self.api_ingress = self._api_ingress(name, args, child)
        self.system_node_group = self._system_nodes(name, args, child)
        after_nodes = pulumi.ResourceOptions(parent=self, depends_on=[self.eks, self.system_node_group])
        self.pod_identity_agent = self._addon(name, "eks-pod-identity-agent", args, None, after_nodes)
        self.coredns = self._addon(
            name,
            "coredns",
            args,
            {
                "replicaCount": 2,
                "nodeSelector": dict(contract.SYSTEM_LABELS),
                "tolerations": contract.system_tolerations(),
            },
            after_nodes,
        )
        self.k8s_provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=self.kubeconfig,
            delete_unreachable=False,
            # The rules too: a destroy must not close the way in before the Kubernetes objects are gone.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.system_node_group, *self.api_ingress]),
        )
        self.ebs_csi, self.storage_class = self._block_storage(name, args, after_nodes)
        self.node_monitoring_agent = self._addon(
            name, "eks-node-monitoring-agent", args, node_monitoring_configuration(), after_nodes
        )
        self.register_outputs(
            {
                "clusterName": self.cluster_name,
                "clusterSecurityGroupId": self.cluster_security_group_id,
                "oidcProviderArn": self.oidc_provider_arn,
                "kubeconfig": self.kubeconfig,
            }
        )

    def _api_ingress(
        self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions
    ) -> list[aws.vpc.SecurityGroupIngressRule]:
        """HTTPS from `privateAccess` sources to the private API endpoint.

        The EKS-created cluster security group sits on the control plane's ENIs and
        admits only its own members; EKS's guide asks for exactly these 443 rules for a
        connected network or bastion (docs.aws.amazon.com/eks/latest/userguide/
        cluster-endpoint.html#private-access). Nodes share the group, so a source here
        can reach 443 on nodes too: keep the list to the runners and VPN ranges that run pulumi.
        One rule per source, named by it, so removing one leaves the others in place.
        """
        # (resource name suffix, CIDR, source group): exactly one of the two is set.
        sources = [(f"cidr-{c.replace('.', '-').replace('/', '-')}", c, None) for c in args.private_access_cidrs]
        sources += [(sg, None, sg) for sg in args.private_access_security_group_ids]
        return [
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-api-from-{key}",
                security_group_id=self.cluster_security_group_id,
                ip_protocol="tcp",
                from_port=443,
                to_port=443,
                cidr_ipv4=cidr,
                referenced_security_group_id=group,
                description=f"Kubernetes API (private endpoint) from {cidr or group}: cluster.privateAccess",
                opts=opts,
            )
            for key, cidr, group in sources
        ]

    def _block_storage(
        self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions
    ) -> tuple[aws.eks.Addon, k8s.storage.v1.StorageClass]:
        """EBS CSI driver (Pod Identity) and an encrypted gp3 default StorageClass, for Prometheus' volume."""
        role = aws.iam.Role(
            f"{name}-ebs-csi-role",
            name=f"{args.name}-ebs-csi",
            assume_role_policy=pod_identity_trust_policy(),
            opts=pulumi.ResourceOptions(parent=self),
        )
        attachment = aws.iam.RolePolicyAttachment(
            f"{name}-ebs-csi-policy",
            role=role.name,
            policy_arn=EBS_CSI_POLICY,
            opts=pulumi.ResourceOptions(parent=self),
        )
        addon = self._addon(
            name,
            "aws-ebs-csi-driver",
            args,
            {
                "controller": {
                    "nodeSelector": dict(contract.SYSTEM_LABELS),
                    "tolerations": contract.system_tolerations(),
                },
                # The node plugin must run wherever a volume may be mounted, GPU nodes included.
                "node": {"tolerateAllTaints": True},
            },
            pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(depends_on=[attachment, self.pod_identity_agent])
            ),
            pod_identity=[
                aws.eks.AddonPodIdentityAssociationArgs(role_arn=role.arn, service_account="ebs-csi-controller-sa")
            ],
        )
        storage_class = k8s.storage.v1.StorageClass(
            f"{name}-gp3",
            metadata={"name": "gp3", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            provisioner="ebs.csi.aws.com",
            parameters={"type": "gp3", "encrypted": "true", "fsType": "ext4"},
            # Bind where the pod lands, so the volume is in the pod's zone.
            volume_binding_mode="WaitForFirstConsumer",
            allow_volume_expansion=True,
            reclaim_policy="Delete",
            opts=pulumi.ResourceOptions(parent=self, provider=self.k8s_provider, depends_on=[addon]),
        )
        return addon, storage_class

    @staticmethod
    def _addon(
        name: str,
        addon: str,
        args: ClusterArgs,
        configuration: dict | None,
        opts: pulumi.ResourceOptions,
        pod_identity: list[aws.eks.AddonPodIdentityAssociationArgs] | None = None,
    ) -> aws.eks.Addon:
        return aws.eks.Addon(
            f"{name}-{addon}",
            cluster_name=args.name,
            addon_name=addon,
            addon_version=versions.eks_addon_version(addon, args.version),
            configuration_values=json.dumps(configuration) if configuration else None,
            pod_identity_associations=pod_identity,
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            opts=opts,
        )

    @staticmethod
    def _admin_entries(args: ClusterArgs) -> dict[str, eks.AccessEntryArgs]:
        scope = aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster")
        return {
            f"admin-{i}": eks.AccessEntryArgs(
                principal_arn=arn,
                access_policies={
                    "cluster-admin": eks.AccessPolicyAssociationArgs(
                        policy_arn=CLUSTER_ADMIN_POLICY, access_scope=scope
                    )
                },
            )
            for i, arn in enumerate(args.admin_role_arns)
        }

    def _system_nodes(self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions) -> aws.eks.NodeGroup:
        nodes = args.system_nodes
        role = aws.iam.Role(f"{name}-system-node-role", assume_role_policy=ec2_assume_role_policy(), opts=opts)
        attachments = [
            aws.iam.RolePolicyAttachment(f"{name}-system-node-{i}", role=role.name, policy_arn=arn, opts=opts)
            for i, arn in enumerate(node_role_policy_arns())
        ]
        template = aws.ec2.LaunchTemplate(
            f"{name}-system-lt",
            block_device_mappings=[
                aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                    device_name="/dev/xvda",
                    ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                        volume_size=nodes.disk_gib, volume_type="gp3", encrypted="true", delete_on_termination="true"
                    ),
                )
            ],
            # Hop limit 2: the Karpenter controller (not host-network) reads its region from IMDS.
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=2
            ),
            tag_specifications=[
                aws.ec2.LaunchTemplateTagSpecificationArgs(
                    resource_type=kind, tags={**args.tags, "Name": f"{args.name}-system"}
                )
                for kind in ("instance", "volume")
            ],
            opts=opts,
        )
        return aws.eks.NodeGroup(
            f"{name}-system",
            cluster_name=args.name,
            node_group_name=f"{args.name}-system",
            node_role_arn=role.arn,
            subnet_ids=args.private_subnet_ids,
            instance_types=list(nodes.instance_types),
            capacity_type="ON_DEMAND",
            ami_type=versions.SYSTEM_NODE_AMI_TYPE,
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                min_size=nodes.min_size, desired_size=nodes.desired_size, max_size=nodes.max_size
            ),
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            launch_template=aws.eks.NodeGroupLaunchTemplateArgs(
                id=template.id, version=template.latest_version.apply(str)
            ),
            labels=dict(contract.SYSTEM_LABELS),
            taints=[aws.eks.NodeGroupTaintArgs(**contract.SYSTEM_TAINT.as_eks())],
            opts=pulumi.ResourceOptions.merge(
                opts,
                pulumi.ResourceOptions(
                    depends_on=[self.eks, *attachments], ignore_changes=["scalingConfig.desiredSize"]
                ),
            ),
        )
