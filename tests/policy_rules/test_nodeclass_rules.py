from __future__ import annotations

import pytest

from tests.policy_rules import fixtures as fx
from tests.policy_rules.helpers import mutated, resource_violations

LT = "aws:ec2/launchTemplate:LaunchTemplate"


@pytest.mark.parametrize("rule", ["node-imdsv2-required", "node-volumes-encrypted", "nodeclass-ami-pinned"])
def test_happy_node_settings_pass(rule: str) -> None:
    assert resource_violations(rule, fx.NODECLASS, fx.nodeclass()) == []
    assert resource_violations(rule, LT, fx.launch_template()) == []


def test_imds_v1_allowed() -> None:
    props = mutated(fx.nodeclass(), "spec.metadataOptions.httpTokens", "optional")
    [message] = resource_violations("node-imdsv2-required", fx.NODECLASS, props)
    assert message == "EC2NodeClass gpu does not require IMDSv2 (httpTokens is 'optional', expected 'required')"


def test_hop_limit_that_lets_pods_reach_imds_and_its_config() -> None:
    props = mutated(fx.nodeclass(), "spec.metadataOptions.httpPutResponseHopLimit", 2)
    [message] = resource_violations("node-imdsv2-required", fx.NODECLASS, props)
    assert message.startswith("EC2NodeClass gpu has IMDS hop limit 2; at most 1")
    assert resource_violations("node-imdsv2-required", fx.NODECLASS, props, {"maxHopLimitNodeClass": 2}) == []


def test_launch_template_without_imdsv2() -> None:
    props = mutated(fx.launch_template(), "metadataOptions.httpTokens", None)
    [message] = resource_violations("node-imdsv2-required", LT, props, name="system-lt")
    assert message == "launch template system-lt does not require IMDSv2 (httpTokens is None, expected 'required')"


def test_unencrypted_volume_in_either_shape() -> None:
    props = mutated(fx.nodeclass(), "spec.blockDeviceMappings[0].ebs.encrypted", False)
    assert resource_violations("node-volumes-encrypted", fx.NODECLASS, props) == [
        "EC2NodeClass gpu volume /dev/xvda is not encrypted"
    ]
    props = mutated(fx.launch_template(), "blockDeviceMappings[0].ebs.encrypted", "false")
    assert resource_violations("node-volumes-encrypted", LT, props, name="lt") == [
        "launch template lt volume /dev/xvda is not encrypted"
    ]


def test_no_block_devices_means_the_amis_defaults() -> None:
    props = mutated(fx.nodeclass(), "spec.blockDeviceMappings", [])
    [message] = resource_violations("node-volumes-encrypted", fx.NODECLASS, props)
    assert "sets no block device mappings" in message


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ({"alias": "al2023@latest"}, "uses AMI alias 'al2023@latest'; pin a release"),
        ({"alias": "bottlerocket@latest"}, "uses AMI alias 'bottlerocket@latest'"),
        ({"tags": {"team": "ml"}}, "selects AMIs by ['tags']"),
    ],
)
def test_unpinned_ami(term: dict, expected: str) -> None:
    props = mutated(fx.nodeclass(), "spec.amiSelectorTerms", [term])
    [message] = resource_violations("nodeclass-ami-pinned", fx.NODECLASS, props)
    assert expected in message


def test_ami_by_id_is_pinned() -> None:
    props = mutated(fx.nodeclass(), "spec.amiSelectorTerms", [{"id": "ami-0123456789abcdef0"}])
    assert resource_violations("nodeclass-ami-pinned", fx.NODECLASS, props) == []
