"""Experiment configs: one test per class of bad input with the message it must show, sweeps,
--set overrides, and every built-in config."""

import tomllib

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
        ({"backend": {"update_every": []}},
         "backend.update_every must be a non-empty integer or list of integers"),
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
        # values that passed validation and failed (or wrote outside runs/) later
        ({"network": {"units": "gaussian", "sigma": 1e-300}},
         "network.sigma must be >= 1e-18, got 1e-300"),
        ({"network": {"rule": "ac", "hidden": [4, 4], "lr": 1e300, "critic_lr_ratio": 1e10}},
         r"\[network\] the critics' learning rate lr x critic_lr_ratio \(1e\+300 x "
         r"10000000000.0\) is not finite"),
        ({"network": {"lr": 10**400}}, "network.lr must be finite, got an integer of 1329 bits"),
        ({"backend": {"window": 2, "reward_delay": 3}},
         r"backend.reward_delay \(3\) needs backend.window >= 4"),
        ({"data": {"dataset": "correlated", "means": 1, "segments": 3, "batch": 32}},
         r"1 x 3 x 32 / 100 is less than one: make the product at least 100"),
        ({"data": {"data_dir": "data\0dir"}}, "data.data_dir must not contain a NUL character"),
        ({"backend": {"node_resources": ["a\0"]}},
         r"backend.node_resources\[0\] must not contain a NUL character"),
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


def test_network_semantics_are_checked_when_the_config_is_validated():
    with pytest.raises(ConfigError, match="network.rule must be one of .*'ac-offpolicy'"):
        valid(network={"rule": "telepathy"})
    # the combination rules live once, in NetworkSpec, and are reached from validation
    with pytest.raises(ConfigError, match=r"t.toml: \[network\] partition must be one letter"):
        valid(network={"units": "gaussian", "partition": "dx"})
    with pytest.raises(ConfigError, match=r"t.toml: \[network\] subset \(9\) exceeds the "
                                          r"narrowest hidden layer \(8 units\)"):
        valid(network={"hidden": [8, 16], "subset": 9})
    with pytest.raises(ConfigError, match=r"t.toml: \[network\] update_every needs one entry "
                                          r"per layer agent \(2\)"):
        valid(backend={"update_every": [1, 2, 3]})


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


def _toml_file(tmp_path, data: bytes, name: str = "c.toml"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_config_that_is_not_utf8_is_named(tmp_path):
    path = _toml_file(tmp_path, b'name = "caf\xe9"\n', "latin1.toml")
    with pytest.raises(ConfigError, match=r"latin1.toml: not UTF-8 text .*byte 0xe9 at offset 11"):
        cfg.load(path)


@pytest.mark.parametrize("text, shown", [
    ("network = 5\n", r"\[network\] must be a table, got an integer 5"),
    ("[[network]]\nlr = 1\n", r"\[network\] must be a table, got an array of tables"),
    ("run = [1, 2]\n", r"\[run\] must be a table, got an array \[1, 2\]"),
    ('data = "multiplexer"\n', r"\[data\] must be a table, got a string"),
])
def test_section_that_is_not_a_table_is_named(tmp_path, text, shown):
    path = _toml_file(tmp_path, text.encode())
    with pytest.raises(ConfigError, match=f"c.toml: {shown}"):
        cfg.load(path)
    with pytest.raises(ConfigError, match=f"c.toml: {shown}"):
        cfg.load(path, ["network.lr=0.5", "run.seed=1", "data.batch=4"])
    with pytest.raises(ConfigError, match=shown):
        cfg.expand_sweep(tomllib.loads(text))


def test_config_nested_too_deeply_is_named(tmp_path):
    path = _toml_file(tmp_path, b"name = " + b"[" * 5000 + b"]" * 5000 + b"\n")
    with pytest.raises(ConfigError, match="c.toml: not a usable config: arrays or tables nested"):
        cfg.load(path)


def test_override_is_one_toml_value_or_a_bare_string():
    # a newline cannot smuggle another key in, and deep nesting is a string, not a RecursionError
    assert cfg.parse_override('network.lr=1\nname = "x"') == ("network.lr", '1\nname = "x"')
    assert cfg.parse_override("network.hidden=" + "[" * 3000) == ("network.hidden", "[" * 3000)
    assert cfg.parse_override("run.seed=" + "9" * 5000) == ("run.seed", "9" * 5000)


@pytest.mark.parametrize("override, message", [
    ("run.seed=[[1], [2]]", r"run.seed: sweep value \[0\] is \[1\]; a sweep lists single values"),
    ("network.hidden=[[[4]], [8]]", r"network.hidden: sweep value \[0\] is \[\[4\]\]"),
    ("network.lr=[{a = 1}]", r"network.lr: sweep value \[0\] is \{'a': 1\}"),
])
def test_nested_sweep_is_named(override, message):
    with pytest.raises(ConfigError, match=message):
        cfg.load("quickstart", [override])


def test_sweep_size_is_bounded_before_expanding():
    seeds = list(range(200))
    lrs = [0.001 * (i + 1) for i in range(100)]
    with pytest.raises(ConfigError, match=r"the sweep network.lr \(100\) x run.seed \(200\) makes "
                                          r"20000 runs, more than the 10000"):
        cfg.load("quickstart", [f"run.seed={seeds}", f"network.lr={lrs}"])


@pytest.mark.parametrize("override, message", [
    ("run.seed=18446744073709551616", "run.seed must fit in 64 bits"),
    ("data.batch=-9223372036854775809", "data.batch must fit in 64 bits"),
    ("network.hidden=[4, 9223372036854775808]", r"network.hidden\[1\] must fit in 64 bits"),
    ("backend.update_every=[1, 1180591620717411303424]", r"backend.update_every\[1\] must fit in 64"),
    ("run.updates=" + "9" * 200, "run.updates must fit in 64 bits .*, got an integer of 665 bits"),
])
def test_integers_beyond_64_bits_are_refused_at_validation(override, message):
    with pytest.raises(ConfigError, match=message):
        cfg.load("quickstart", [override])


def test_integer_beyond_64_bits_leaves_nothing_behind(tmp_path, capsys):
    from async_coagents.cli import main

    out = tmp_path / "run"
    assert main(["train", "quickstart", "--set", f"run.seed={2**64}", "--out", str(out),
                 "--no-progress"]) == 1
    assert "run.seed must fit in 64 bits" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("name", ["../../outside", "a/b", "a\\b", "..", ".hidden", "", "-x",
                                  "with space", "x" * 101, "caf\u00e9"])
def test_name_must_be_one_safe_path_component(name):
    raw = {"name": name, "data": {"dataset": "multiplexer"}, "run": {"updates": 10}}
    with pytest.raises(ConfigError, match=r"t.toml: name .* must be one path component: letters"):
        cfg.validate(raw, "t.toml")


def test_safe_names_are_accepted():
    for name in ("quickstart", "my-run_2.1", "A" * 100):
        raw = {"name": name, "data": {"dataset": "multiplexer"}, "run": {"updates": 10}}
        assert cfg.validate(raw, "t.toml")["name"] == name


@pytest.mark.parametrize("overrides, keys", [
    (["network.hidden=[1000000000]"], r"network.hidden = \[1000000000\]"),
    (["network.rule=ac", "network.hidden=[8, 8]", "network.critic_units=10000000000"],
     r"network.critic_units = 10000000000, network.critic_layers = 1: .* of critic parameters"),
    (["network.rule=ac", "network.hidden=[8, 8]", "network.critic_layers=1000000000000"],
     r"network.critic_layers = 1000000000000"),
    (["data.batch=100000000000"], r"data.batch = 100000000000"),
    (["data.dataset=correlated", "run.updates=0", "data.means=1000000000"],
     r"data.means = 1000000000, data.segments = 1600"),
])
def test_configs_that_cannot_fit_in_memory_are_refused_naming_the_key(overrides, keys):
    with pytest.raises(ConfigError, match=rf"built-in quickstart: the run would allocate an "
                                          rf"estimated [0-9.]+ [TP]B \(.*{keys}.*\), more than the "
                                          r".* of memory of this machine; make (network|data)\.\w+"):
        cfg.load("quickstart", overrides)


def test_memory_estimate_is_checked_against_the_limit():
    from async_coagents.experiment import footprint

    config = valid()
    total = sum(part.bytes for part in footprint.estimate(config))
    assert 0 < total < 10 << 20
    footprint.check_fits(config, "t.toml", limit=total)
    with pytest.raises(ConfigError, match=r"t.toml: the run would allocate an estimated .* more "
                                          r"than the 1.0 kB of memory"):
        footprint.check_fits(config, "t.toml", limit=1000)


def test_memory_error_while_building_is_a_config_error(tmp_path, monkeypatch):
    from async_coagents.experiment import run as run_module

    def no_memory(spec, seed):
        raise MemoryError("Unable to allocate 56.0 GiB for an array")

    monkeypatch.setattr(run_module, "build_network", no_memory)
    with pytest.raises(ConfigError, match=r"not enough memory to build the run 't' \(Unable to "
                                          r"allocate 56.0 GiB .*\); make network.hidden"):
        run_module.train(valid(), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_config_path_that_is_a_directory_is_named(tmp_path):
    (tmp_path / "configs.toml").mkdir()
    with pytest.raises(ConfigError, match=r"configs.toml is not a file"):
        cfg.load(tmp_path / "configs.toml")
