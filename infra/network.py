"""VPC with public and private subnets across AZs, NAT per config.

Private subnets carry Karpenter's discovery tag: nodes, and with the VPC CNI every
pod, take their addresses there. Public subnets carry both load balancer role tags
(`kubernetes.io/role/elb` for internet-facing, `kubernetes.io/role/internal-elb`
for internal), so the AWS Load Balancer Controller puts every load balancer in
them: an internal one gets private addresses only, and holds none of the pods'
addresses, so an exposed service's NetworkPolicy can admit the load balancer by
its subnets without admitting every pod of the cluster (as the private subnets'
range would).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from domain import contract

# Subnet discovery of the AWS Load Balancer Controller (docs/deploy/subnet_discovery.md, v3.5.0).
LOAD_BALANCER_ROLE_TAGS = {"kubernetes.io/role/elb": "1", "kubernetes.io/role/internal-elb": "1"}


@dataclass(frozen=True)
class NetworkArgs:
    cluster_name: str
    cidr: str
    availability_zones: tuple[str, ...]
    # One private and one public subnet per zone, in the zones' order.
    private_subnet_cidrs: tuple[str, ...]
    public_subnet_cidrs: tuple[str, ...]
    nat_gateway_per_az: bool  # else one NAT gateway for the whole VPC


class Network(pulumi.ComponentResource):
    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gpuinf:network:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cluster_tag = {f"kubernetes.io/cluster/{args.cluster_name}": "shared"}

        self.vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags={"Name": f"{args.cluster_name}-vpc"},
            opts=child,
        )
        self.igw = aws.ec2.InternetGateway(
            f"{name}-igw", vpc_id=self.vpc.id, tags={"Name": f"{args.cluster_name}-igw"}, opts=child
        )
        self.public_subnets = [
            self._subnet(name, "public", i, az, cidr, {**cluster_tag, **LOAD_BALANCER_ROLE_TAGS}, child)
            for i, (az, cidr) in enumerate(zip(args.availability_zones, args.public_subnet_cidrs, strict=True))
        ]
        private_tags = {**cluster_tag, contract.DISCOVERY_TAG: args.cluster_name}
        self.private_subnets = [
            self._subnet(name, "private", i, az, cidr, private_tags, child)
            for i, (az, cidr) in enumerate(zip(args.availability_zones, args.private_subnet_cidrs, strict=True))
        ]
        public_routes = self._public_routes(name, child)
        self.nat_gateways = self._nat_gateways(name, args, child)
        private_routes = self._private_routes(name, child)
        # The path from a private subnet to the internet (route table associations ->
        # tables -> NAT gateways -> EIPs, IGW). Controllers that call AWS APIs from the
        # private subnets (Karpenter) depend on it, so `pulumi destroy` keeps it until
        # they have finished.
        self.egress: list[pulumi.Resource] = [*private_routes, *public_routes]

        self.vpc_id = self.vpc.id
        self.public_subnet_ids = pulumi.Output.all(*[s.id for s in self.public_subnets])
        self.private_subnet_ids = pulumi.Output.all(*[s.id for s in self.private_subnets])
        self.register_outputs(
            {
                "vpcId": self.vpc_id,
                "publicSubnetIds": self.public_subnet_ids,
                "privateSubnetIds": self.private_subnet_ids,
            }
        )

    def _subnet(
        self, name: str, tier: str, index: int, az: str, cidr: str, tags: dict[str, str], opts: pulumi.ResourceOptions
    ) -> aws.ec2.Subnet:
        return aws.ec2.Subnet(
            f"{name}-{tier}-{index}",
            vpc_id=self.vpc.id,
            cidr_block=cidr,
            availability_zone=az,
            map_public_ip_on_launch=False,
            tags={"Name": f"{name}-{tier}-{az}", "tier": tier, **tags},
            opts=opts,
        )

    def _public_routes(self, name: str, opts: pulumi.ResourceOptions) -> list[aws.ec2.RouteTableAssociation]:
        table = aws.ec2.RouteTable(
            f"{name}-public-rt",
            vpc_id=self.vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=self.igw.id)],
            tags={"Name": f"{name}-public"},
            opts=opts,
        )
        return [
            aws.ec2.RouteTableAssociation(
                f"{name}-public-rta-{i}", subnet_id=subnet.id, route_table_id=table.id, opts=opts
            )
            for i, subnet in enumerate(self.public_subnets)
        ]

    def _nat_gateways(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions) -> list[aws.ec2.NatGateway]:
        # One NAT per AZ survives an AZ outage; a single NAT is cheaper for dev.
        count = len(self.public_subnets) if args.nat_gateway_per_az else 1
        gateways = []
        for i in range(count):
            eip = aws.ec2.Eip(f"{name}-nat-eip-{i}", domain="vpc", tags={"Name": f"{name}-nat-{i}"}, opts=opts)
            gateways.append(
                aws.ec2.NatGateway(
                    f"{name}-nat-{i}",
                    allocation_id=eip.id,
                    subnet_id=self.public_subnets[i].id,
                    tags={"Name": f"{name}-nat-{i}"},
                    opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[self.igw])),
                )
            )
        return gateways

    def _private_routes(self, name: str, opts: pulumi.ResourceOptions) -> list[aws.ec2.RouteTableAssociation]:
        associations = []
        for i, subnet in enumerate(self.private_subnets):
            nat = self.nat_gateways[i % len(self.nat_gateways)]
            table = aws.ec2.RouteTable(
                f"{name}-private-rt-{i}",
                vpc_id=self.vpc.id,
                routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", nat_gateway_id=nat.id)],
                tags={"Name": f"{name}-private-{i}"},
                opts=opts,
            )
            associations.append(
                aws.ec2.RouteTableAssociation(
                    f"{name}-private-rta-{i}", subnet_id=subnet.id, route_table_id=table.id, opts=opts
                )
            )
        return associations
