"""Backbone configuration: validation and YAML files."""

import pytest
import yaml

from companion.backbone import BackboneConfig, RoutingConfig
from companion.errors import ConfigError


def test_yaml_round_trip(tmp_path):
    config = BackboneConfig(model="./ckpt", n_experts=8, routing=RoutingConfig(policy="top_p", top_p=0.6))
    path = tmp_path / "backbone.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    assert BackboneConfig.from_file(path) == config


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("model: default\nexperts: 4\n", "unknown keys \\['experts'\\]"),
        ("- a\n- b\n", "must hold a mapping"),
        ("routing: {policy: sometimes}\n", "routing.policy"),
        ("dtype: int8\n", "dtype"),
        ("model: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_files_say_what_is_wrong(tmp_path, content, match):
    path = tmp_path / "backbone.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=match):
        BackboneConfig.from_file(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        BackboneConfig.from_file(tmp_path / "nope.yaml")
