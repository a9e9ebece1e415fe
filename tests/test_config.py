"""Experiment configs: one test per class of bad input with the message it must show, sweeps,
--set overrides, and every built-in config."""

import pytest

from async_coagents.core.network import build_network
from async_coagents.errors import ConfigError
from async_coagents.experiment import config as cfg
from async_coagents.experiment.workload import build_workload, network_spec
from tests.conftest import require_dataset


def valid(**sections):
    raw = {"name": "t", "data": {"dataset": "multiplexer"}, "run": {"updates": 10}}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return cfg.validate(raw, "t.toml")


@pytest.mark.parametrize(
    "raw, message",
    [  # unknown keys and sections (with a suggestion)
        ({"netwrk": {}}, r"unknown key or section 'netwrk' \(did you mean 'network'\?\)"),
        ({"network": {"hiden": [4]}}, r"unknown key network.hiden \(did you mean 'hidden'\?\)"),
        # wrong types
        ({"network": {"lr": "fast"}}, "network.lr must be a number, got 'fast'"),
        ({"network": {"hidden": 64}}, "network.hidden must be a list of integers, got 64"),
        ({"network": {"hidden": [64, 2.5]}}, r"network.hidden\[1\] must be an integer, got 2.5"),
        ({"run": {"seed": 1.5}}, "run.seed must be an integer, got 1.5"),
        ({"network": {"staged": "yes"}}, "network.staged must be true or false"),
        ({"network": 3}, r"\[network\] must be a table"),
        # impossible values
        ({"network": {"lr": -0.1}}, "network.lr must be > 0, got -0.1"),
        ({"network": {"hidden": []}}, "network.hidden must be a non-empty list"),
        ({"network": {"hidden": [0]}}, r"network.hidden\[0\] must be >= 1, got 0"),
        ({"network": {"units": "spiking"}}, "network.units must be one of"),
        ({"data": {"difficulty": 1.5}}, r"data.difficulty must be <= 1, got 1.5"),
        ({"network": {"baseline_decay": 1.0}}, "network.baseline_decay must be < 1"),
        ({"backend": {"window": 0}}, "backend.window must be >= 1"),
        # impossible combinations
        ({"run": {"updates": 10, "epochs": 2}}, "set run.updates or run.epochs, not both"),
        ({"run": {"updates": 0}}, "a uniform stream is endless: set run.updates"),
        ({"data": {"stream": "correlated"}}, "'correlated' goes with data.dataset 'correlated'"),
        ({"network": {"staged": True}}, "network.staged follows the paper's schedule over epochs"),
        ({"network": {"normalisation": "symmetric"}},
         "network.n_actions and network.normalisation apply to categorical units only"),
        ({"network": {"units": "gaussian", "n_actions": 4}},
         "network.n_actions and network.normalisation apply to categorical units only"),
        ({"backend": {"units_per_actor": 4}, "run": {"updates": 10, "pretrain_updates": 2}},
         "units_per_actor cannot be combined with run.pretrain_updates"),
    ],
)
def test_bad_config_names_the_key_and_why(raw, message):
    base = {"data": {"dataset": "multiplexer"}, "run": {"updates": 10}}
    for section, values in raw.items():
        if isinstance(values, dict) and isinstance(base.get(section), dict):
            base[section] = {**base[section], **values}
        else:
            base[section] = values
    with pytest.raises(ConfigError, match=message):
        cfg.validate(base, "t.toml")


def test_network_semantics_are_checked_when_the_network_is_built():
    with pytest.raises(ConfigError, match="network.rule must be one of .*'ac-offpolicy'"):
        valid(network={"rule": "telepathy"})
    config = valid(network={"units": "gaussian", "partition": "dx"})
    with pytest.raises(ConfigError, match=r"\[network\] partition must be one letter"):
        network_spec(config, build_workload(config))


def test_defaults_are_filled():
    config = valid()
    assert config["network"]["optimizer"] == "rmsprop" and config["backend"]["window"] == 1


def test_sweep_is_the_cartesian_product():
    raw = {"name": "s", "network": {"lr": [0.1, 0.01], "hidden": [[4], [4, 4]]},
           "run": {"seed": [0, 1, 2], "updates": 5}}
    runs = cfg.expand_sweep(raw)
    assert len(runs) == 12
    points = [point for _, point in runs]
    assert points[0] == {"network.hidden": [4], "network.lr": 0.1, "run.seed": 0}
    assert {tuple(p["network.hidden"]) for p in points} == {(4,), (4, 4)}
    # a plain list for a list-valued key is the value, not a sweep
    assert cfg.expand_sweep({"network": {"hidden": [4, 4]}}) == [({"network": {"hidden": [4, 4]}},
                                                                  {})]


def test_overrides_parse_toml_values_and_bare_strings():
    raw = cfg.apply_overrides({"network": {"lr": 1.0}}, [
        "network.lr=0.5", "network.hidden=[8, 8]", "network.rule=ac-offpolicy",
        'data.dataset="correlated"', "run.eval_train=true", "name=renamed"])
    assert raw == {"network": {"lr": 0.5, "hidden": [8, 8], "rule": "ac-offpolicy"},
                   "data": {"dataset": "correlated"}, "run": {"eval_train": True},
                   "name": "renamed"}
    with pytest.raises(ConfigError, match="--set expects key=value"):
        cfg.apply_overrides({}, ["network.lr"])
    with pytest.raises(ConfigError, match="keys are section.key"):
        cfg.apply_overrides({}, ["nope.lr=1"])
    with pytest.raises(ConfigError, match="the key before '=' is empty"):
        cfg.apply_overrides({}, ["=3"])


def test_unknown_config_name_lists_the_built_in_ones():
    with pytest.raises(ConfigError, match="no built-in config called 'quickstrat'.*quickstart"):
        cfg.read_config("quickstrat")


def test_invalid_toml_file_is_named(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[network\nlr = 1")
    with pytest.raises(ConfigError, match="broken.toml: not valid TOML"):
        cfg.read_config(path)


def test_schema_text_documents_every_key():
    text = cfg.schema_text()
    for section, keys in cfg.SCHEMA.items():
        assert f"[{section}]" in text
        for key in keys:
            assert f"  {key} (" in text


@pytest.mark.parametrize("name", cfg.builtin_names())
def test_every_built_in_config_validates_and_builds(name):
    ((config, _),) = cfg.load(name)
    assert config["name"] == name and config["description"]
    if config["data"]["dataset"] in ("fashion-mnist", "mnist"):
        require_dataset(config["data"]["dataset"])
    workload = build_workload(config)
    build_network(network_spec(config, workload), 0)


def test_staged_config_freezes_layers_on_the_paper_schedule():
    config = valid(network={"hidden": [4, 4, 4], "staged": True, "rule": "reinforce"},
                   data={"stream": "shuffled"}, run={"updates": 0, "epochs": 150})
    workload = build_workload(config)
    spec = network_spec(config, workload)
    per_epoch = workload.batches_per_epoch  # 64 patterns / 32 = 2 batches per epoch
    assert per_epoch == 2
    assert spec.freeze_at == (51 * per_epoch, 101 * per_epoch, None)
