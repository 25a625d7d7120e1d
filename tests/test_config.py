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
        ("n_experts: four\n", "n_experts is 'four'; expected int"),
        ("n_experts: true\n", "n_experts is True; expected int"),
        ("n_threads: 2.5\n", "n_threads is 2.5; expected int or null"),
    ],
)
def test_bad_files_say_what_is_wrong(tmp_path, content, match):
    path = tmp_path / "backbone.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=match):
        BackboneConfig.from_file(path)


def test_a_whole_number_reads_as_a_float_and_null_as_an_unset_option(tmp_path):
    from training.dpo.on_policy import OnPolicyConfig

    path = tmp_path / "on_policy.yaml"
    path.write_text("fluency_weight: 2\n")
    assert OnPolicyConfig.from_file(path).fluency_weight == 2
    path.write_text("repetition_weight: 5.0# a comment needs a space before it\n")
    with pytest.raises(ConfigError, match="repetition_weight is '5.0# a comment"):
        OnPolicyConfig.from_file(path)
    path = tmp_path / "backbone.yaml"
    path.write_text("n_threads: null\n")
    assert BackboneConfig.from_file(path).n_threads is None


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        BackboneConfig.from_file(tmp_path / "nope.yaml")
