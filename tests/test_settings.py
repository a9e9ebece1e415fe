"""The one definition of the network settings (``core.settings``): NetworkSpec's fields and
defaults, the config schema's network keys and ``workload.network_spec``'s copy all come from it,
and a config and a library user constructing NetworkSpec directly meet the same per-key checks."""

import dataclasses

import pytest

from async_coagents.core.network import NetworkSpec
from async_coagents.core.rules import RULES, Reinforce
from async_coagents.core.settings import SETTINGS, config_default
from async_coagents.errors import ConfigError
from async_coagents.experiment import config as cfg
from async_coagents.experiment.workload import build_workload, network_spec

BASE = dict(n_inputs=5, n_outputs=3, hidden=(8, 6))


def test_every_spec_field_is_one_setting_with_its_default():
    spec_fields = {f.name: f for f in dataclasses.fields(NetworkSpec)}
    assert list(spec_fields) == list(SETTINGS)
    for name, f in spec_fields.items():
        if f.default is not dataclasses.MISSING:
            assert f.default == SETTINGS[name].default, name


def test_the_config_schema_is_derived_from_the_settings():
    for name, setting in SETTINGS.items():
        if setting.config is None:
            continue
        section, key = setting.config.split(".")
        key_spec = cfg.SCHEMA[section][key]
        assert (key_spec.doc, key_spec.type, key_spec.default) == (
            setting.doc, setting.type, config_default(setting)), name


@pytest.mark.parametrize("overrides, message", [
    # Rules a config always enforced and NetworkSpec did not (two checkers before, one now).
    (dict(sigma=1e-300), "sigma must be >= 1e-18, got 1e-300"),
    (dict(critic_units=2**70), "critic_units must fit in 64 bits"),
    (dict(n_actions=1), "n_actions must be >= 2, got 1"),
])
def test_a_direct_spec_meets_the_checks_of_a_config(overrides, message):
    with pytest.raises(ConfigError, match=message):
        NetworkSpec(**{**BASE, **overrides})
    section_key = SETTINGS[next(iter(overrides))].config
    section, key = section_key.split(".")
    with pytest.raises(ConfigError, match=f"t.toml: {section}.{message}"):
        cfg.validate({section: {key: next(iter(overrides.values()))},
                      "run": {"updates": 10}}, "t.toml")


class Toy(Reinforce):
    """A rule registered at run time."""

    name = "toy-registered-late"


def test_a_rule_registered_after_import_is_a_valid_config_and_spec_choice():
    RULES[Toy.name] = Toy
    try:
        config = cfg.validate({"network": {"rule": Toy.name}, "run": {"updates": 10}}, "t.toml")
        spec = network_spec(config, build_workload(config))
        assert spec.rule == Toy.name
        assert f"'{Toy.name}'" in cfg.schema_text()
    finally:
        del RULES[Toy.name]
    with pytest.raises(ConfigError, match="network.rule must be one of"):
        cfg.validate({"network": {"rule": Toy.name}, "run": {"updates": 10}}, "t.toml")


def test_network_spec_copies_every_setting_a_config_holds():
    raw = {"network": {"hidden": [7, 5], "units": "categorical", "n_actions": 3,
                       "normalisation": "symmetric", "rule": "ac", "lr": 0.01,
                       "optimizer": "adam", "adam_beta1": 0.8, "adam_beta2": 0.99, "eps": 1e-6,
                       "critic_layers": 2, "critic_units": 16, "critic_lr_ratio": 3.0,
                       "baseline_decay": 0.5, "rmsprop_beta": 0.9, "subset": 4, "dtype": "float64",
                       "sigma": 0.25},
           "backend": {"update_every": [1, 2, 1], "window": 2},
           "run": {"updates": 10}}
    config = cfg.validate(raw, "t.toml")
    spec = network_spec(config, build_workload(config))
    for key, value in raw["network"].items():
        expected = tuple(value) if isinstance(value, list) else value
        assert getattr(spec, key) == expected, key
    assert spec.update_every == (1, 2, 1)
    assert (spec.activation, spec.partition, spec.output) == (None, None, None)


def test_per_layer_options_travel_as_one_object_from_the_spec_to_every_agent():
    from async_coagents.core.network import build_network
    from async_coagents.core.settings import LayerOptions

    spec = NetworkSpec(**BASE, freeze_at=(4, None), update_every=(2, 1, 3), max_pending=7,
                       subset=3, subset_every=5)
    assert [spec.layer_options(i) for i in range(3)] == [
        LayerOptions(update_every=2, max_pending=7, subset=3, subset_every=5, freeze_at=4),
        LayerOptions(update_every=1, max_pending=7, subset=3, subset_every=5, freeze_at=None),
        LayerOptions(update_every=3, max_pending=7, subset_every=5),
    ]
    network = build_network(spec, 0)
    for i, layer in enumerate(network.layers):
        assert layer.options == spec.layer_options(i)
        assert (layer.update_every, layer.max_pending) == (
            spec.layer_options(i).update_every, 7)
    assert [layer.subset_size for layer in network.layers[:2]] == [3, 3]
    assert [layer.freeze_at for layer in network.layers[:2]] == [4, None]

    split = build_network(NetworkSpec(**BASE, freeze_at=(2, 3), update_every=(2, 1, 1),
                                      units_per_agent=3), 0)
    for i, layer in enumerate(split.layers[:2]):
        assert all(group.options == split.spec.layer_options(i) for group in layer.groups)


def test_the_footprint_counts_the_critics_of_the_layer_plan_the_spec_builds():
    """A partition group is one agent with one critic (§2.6); the footprint asks the spec for the
    plan instead of assuming one agent per hidden layer."""
    from async_coagents.core.network import build_network
    from async_coagents.experiment import footprint

    config = cfg.validate({"network": {"units": "gaussian", "partition": "dsd",
                                       "hidden": [5, 6, 7], "rule": "ac", "critic_units": 16,
                                       "optimizer": "sgd"},
                           "run": {"updates": 10}}, "t.toml")
    network = build_network(network_spec(config, build_workload(config)), 0)
    critic_params = sum(layer.rule.critic.net.params.size for layer in network.layers
                        if getattr(getattr(layer, "rule", None), "critic", None) is not None)
    assert critic_params
    (part,) = [p for p in footprint.estimate(config) if p.what.startswith("of critic")]
    copies = 3 + 2  # sgd: weights, gradient, scratch; a checkpoint's state and its bytes
    assert part.bytes == critic_params * 4 * copies
