"""Network specifications and the builder: validation (one test per class of bad input, with the
message it must show), partition groups (paper_method.md §2.6), learners, rule wiring, the
input-state and layer-state baselines (§3.4, §3.5) and backprop pre-training (§5.4)."""

import numpy as np
import pytest

from async_coagents.backends.local import LocalBackend
from async_coagents.core.baselines import EmaBaseline, StateBaseline
from async_coagents.core.layers import BackpropNetwork, CoagentLayer, Readout
from async_coagents.core.network import NetworkSpec, build_network
from async_coagents.core.optim import SGD
from async_coagents.core.rules import RULES
from async_coagents.errors import CheckpointError, ConfigError
from async_coagents.testing import train_in_process

BASE = dict(n_inputs=5, n_outputs=3, hidden=(8, 6))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(n_inputs=0), "n_inputs must be >= 1, got 0"),
        (dict(hidden=(8, -1)), r"hidden\[1\] must be >= 1, got -1"),
        (dict(learner="evolution"), "learner must be one of"),
        (dict(units="ternary"), "units must be one of"),
        (dict(rule="reinforce-ish"), "rule must be one of .*'ac-offpolicy'.*, got 'reinforce-ish'"),
        (dict(lr=0.0), "lr must be > 0, got 0.0"),
        (dict(lr=float("nan")), "lr must be finite, got nan"),
        (dict(rmsprop_beta=1.0), "rmsprop_beta must be < 1, got 1.0"),
        (dict(task="ranking"), "task must be 'classification' or 'regression'"),
        (dict(task="regression"), "regression has exactly one output"),
        (dict(units="gaussian", partition="dx"), "partition must be one letter"),
        (dict(partition="ds"), "partition applies only to Gaussian units"),
        (dict(units="gaussian", activation="tanh"), "activation of Gaussian units"),
        (dict(activation="relu"), "activation applies to Gaussian units"),
        (dict(learner="backprop", activation="softplus"), "activation must be one of"),
        (dict(learner="straight-through", activation="relu"), "activation for learner 'straight-through'"),
        (dict(subset=7), r"subset \(7\) exceeds the narrowest hidden layer \(6 units\)"),
        (dict(freeze_at=(1,)), "freeze_at needs one entry per stochastic hidden layer"),
        (dict(update_every=(1, 1)), r"update_every needs one entry per layer agent \(3\)"),
        (dict(reinforce_updates=10), "reinforce_updates applies only to the rules"),
        (dict(units="gaussian", learner="policy-gradient", rule="ac"), "policy-gradient through backprop"),
        (dict(dtype="float16"), "dtype must be one of"),
        (dict(output="softmax"), "output must be one of"),
        (dict(output="categorical", task="regression", n_outputs=1), "a categorical output "
         "classifies; the task is 'regression'"),
        (dict(output="categorical", miss_reward=2.0), "miss_reward must be <= 1"),
        (dict(rule="ac", lr=1e300, critic_lr_ratio=1e10), "critics' learning rate .* not finite"),
    ],
)
def test_bad_specifications_name_the_problem(overrides, message):
    with pytest.raises(ConfigError, match=message):
        NetworkSpec(**{**BASE, **overrides})


def test_unknown_keys_in_a_dict_spec_are_named():
    with pytest.raises(ConfigError, match=r"unknown network setting\(s\) \['hiden'\]"):
        NetworkSpec.from_dict({**BASE, "hiden": [4]})


def test_spec_round_trips_through_a_plain_dict():
    spec = NetworkSpec(**BASE, freeze_at=(3, None))
    assert NetworkSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize(
    "partition, plan",
    [  # §2.6 examples with 2 hidden layers of 64 and one regression output
        ("ds", [("coagent", [1, 64, 64]), ("gaussian-output", [64, 1])]),
        ("sd", [("coagent", [1, 64]), ("gaussian-output", [64, 64, 1])]),
        ("ss", [("coagent", [1, 64]), ("coagent", [64, 64]), ("gaussian-output", [64, 1])]),
        ("dd", [("gaussian-output", [1, 64, 64, 1])]),
    ],
)
def test_partition_groups(partition, plan):
    spec = NetworkSpec(n_inputs=1, n_outputs=1, task="regression", hidden=(64, 64),
                       units="gaussian", activation="relu", partition=partition)
    assert spec.layer_plan() == plan
    net = build_network(spec, 0)
    assert [layer.policy.sizes for layer in net.layers] == [sizes for _, sizes in plan]
    assert all(layer.policy.activation == "relu" for layer in net.layers)


def test_policy_gradient_learner_is_one_gaussian_coagent_over_a_relu_mlp():
    spec = NetworkSpec(n_inputs=3, n_outputs=1, task="regression", hidden=(16, 16),
                       units="gaussian", learner="policy-gradient", sigma=0.1)
    (layer,) = build_network(spec, 0).layers
    assert isinstance(layer, CoagentLayer)
    assert layer.policy.sizes == [3, 16, 16, 1] and layer.policy.activation == "relu"
    assert layer.unit.sigma == 0.1 and layer.unit.activation == "identity"


@pytest.mark.parametrize("learner, activation", [("backprop", "tanh"),
                                                 ("straight-through", "straight_through")])
def test_comparison_learners_are_one_backprop_network(learner, activation):
    spec = NetworkSpec(**BASE, learner=learner,
                       activation="tanh" if learner == "backprop" else None)
    (layer,) = build_network(spec, 0).layers
    assert isinstance(layer, BackpropNetwork) and not isinstance(layer, Readout)
    assert layer.net.activation == activation
    assert layer.net.sizes == [5, 8, 6, 3]


def test_discrete_defaults_readout_and_gaussian_defaults_gaussian_output():
    assert NetworkSpec(**BASE).resolved_output == "readout"
    spec = NetworkSpec(n_inputs=2, n_outputs=1, task="regression", units="gaussian")
    assert spec.resolved_output == "gaussian"
    assert isinstance(build_network(spec, 0).output, CoagentLayer)


def test_each_layer_gets_its_own_streams():
    net = build_network(NetworkSpec(**{**BASE, "hidden": (8, 8)}), 0)
    l0, l1 = net.layers[:2]
    assert not np.array_equal(l0.policy.params[:8 * 16], l1.policy.params[:8 * 16])
    assert l0.rng.random() != l1.rng.random()
    # a different seed changes the weights; the same seed reproduces them
    again, other = build_network(net.spec, 0), build_network(net.spec, 1)
    np.testing.assert_array_equal(again.layers[0].policy.params, l0.policy.params)
    assert not np.array_equal(other.layers[0].policy.params, l0.policy.params)


def test_layer_baseline_gives_every_coagent_layer_its_own_linear_value():
    spec = NetworkSpec(n_inputs=4, n_outputs=1, task="regression", hidden=(6,),
                       units="gaussian", rule="layer-baseline", optimizer="sgd", lr=0.1,
                       dtype="float64")
    net = build_network(spec, 0)
    baselines = [layer.baseline for layer in net.layers]
    assert all(isinstance(b, StateBaseline) for b in baselines)
    assert [b.value_fn.n_in for b in baselines] == [4, 6]
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 4)), rng.normal(size=8)
    train_in_process(net, [(0, x, y)])
    assert all(b.value_fn.params.any() for b in baselines)  # each regressed toward r


def test_input_baseline_broadcasts_the_advantage():
    spec = NetworkSpec(n_inputs=4, n_outputs=2, hidden=(6,), units="gaussian",
                       rule="input-baseline", optimizer="sgd", lr=0.1, dtype="float64")
    net = build_network(spec, 0)
    assert net.input_baseline is not None
    v = net.input_baseline.baseline
    v.value_fn.params[...] = np.arange(5.0) / 10
    x = np.random.default_rng(1).normal(size=(3, 4))
    r = np.array([-1.0, -2.0, -0.5])
    expected = r - (x @ (np.arange(4.0) / 10) + 0.4)
    net.input_baseline.forward(7, x)
    np.testing.assert_allclose(net.input_baseline.reward(7, r), expected)
    assert net.input_baseline.reward(8, r) is None  # unknown batch


def test_pretraining_copies_the_mlp_and_switches_to_sgd_lr_over_128():
    spec = NetworkSpec(n_inputs=2, n_outputs=1, task="regression", hidden=(8, 8),
                       units="gaussian", activation="relu", rule="baseline", optimizer="rmsprop",
                       lr=0.01, dtype="float64")
    net = build_network(spec, 0)
    twin = build_network(spec.pretraining_twin(), 0)
    rng = np.random.default_rng(2)
    xs = [rng.normal(size=(4, 2)) for _ in range(5)]
    train_in_process(twin, [(sid, x, np.sin(x[:, 0])) for sid, x in enumerate(xs)])
    assert twin.output.version == 5
    LocalBackend(net).load_pretrained(twin)
    assert all(isinstance(layer.optimizer, SGD) and layer.optimizer.lr == 0.01 / 128
               for layer in net.layers)
    copied = [a for layer in net.layers for pair in zip(layer.net.weights, layer.net.biases,
                                                        strict=True) for a in pair]
    learnt = [a for layer in twin.layers for pair in zip(layer.net.weights, layer.net.biases,
                                                         strict=True) for a in pair]
    for a, b in zip(copied, learnt, strict=True):
        np.testing.assert_array_equal(a, b)  # the twin's affine maps, in order (§5.4)


def test_pretraining_a_discrete_network_is_refused():
    spec = NetworkSpec(**BASE)
    twin = build_network(spec.pretraining_twin(), 0)
    train_in_process(twin, [(0, np.zeros((2, 5), np.float32), np.array([0, 1]))])
    with pytest.raises(ConfigError, match="line up with a plain MLP"):
        LocalBackend(build_network(spec, 0)).load_pretrained(twin)


def test_ema_baseline_is_one_copy_per_layer_and_copies_agree():
    net = build_network(NetworkSpec(**BASE, rule="baseline"), 0)
    rng = np.random.default_rng(3)
    for sid in range(5):
        train_in_process(net, [(sid, rng.normal(size=(4, 5)).astype(np.float32),
                               rng.integers(0, 3, 4))])
    values = [layer.baseline.value for layer in net.layers[:-1]]
    assert all(isinstance(layer.baseline, EmaBaseline) for layer in net.layers[:-1])
    assert values[0] == values[1] and values[0] is not None


def test_network_state_refuses_a_mismatched_checkpoint():
    a = build_network(NetworkSpec(**BASE), 0)
    b = build_network(NetworkSpec(**{**BASE, "hidden": (8,)}), 0)
    with pytest.raises(CheckpointError, match="checkpoint has 3 layers, the network has 2"):
        b.load_state_dict(a.state_dict())
    c = build_network(NetworkSpec(**{**BASE, "hidden": (8, 7)}), 0)
    with pytest.raises(CheckpointError, match="parameters in the checkpoint"):
        c.load_state_dict(a.state_dict())


def test_every_rule_builds_and_trains_one_step():
    for name in RULES:
        extra = {"reinforce_updates": 2} if RULES[name].reinforce_phase else {}
        try:
            spec = NetworkSpec(**BASE, rule=name, critic_units=8, **extra)
        except ConfigError:  # a rule for a stochastic output coagent only (hnca, weight-max)
            spec = NetworkSpec(**BASE, rule=name, critic_units=8, output="categorical", **extra)
        net = build_network(spec, 0)
        (loss,) = train_in_process(net, [(0, np.ones((2, 5), np.float32), np.array([0, 2]))])
        assert np.isfinite(loss)
        assert all(layer.pending == 0 for layer in net.layers)


def test_a_categorical_output_samples_a_class_and_is_rewarded_for_hitting_the_label():
    spec = NetworkSpec(n_inputs=4, n_outputs=3, hidden=(5,), output="categorical",
                       miss_reward=-0.5)
    assert [kind for kind, _ in spec.layer_plan()] == ["coagent", "categorical-output"]
    net = build_network(spec, 0)
    out = net.output
    assert isinstance(out, CoagentLayer) and out.n_units == 1 and out.needs_reward
    x = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
    h = net.layers[0].forward(0, x)
    prediction = out.forward(0, h)
    assert prediction.shape == (64, 3) and set(prediction.sum(axis=1)) == {1.0}
    y = np.zeros(64, dtype=np.int64)
    r = net.objective.reward(prediction, y)
    assert set(r) <= {1.0, -0.5} and np.array_equal(r == 1.0, prediction[:, 0] == 1.0)
    metrics = net.objective.metrics(net.act(x), y)
    assert set(metrics) == {"accuracy", "reward"}


def test_a_learning_rate_per_layer_agent_reaches_each_layer_its_critic_and_baselines():
    spec = NetworkSpec(n_inputs=4, n_outputs=3, hidden=(5, 4), rule="ac", critic_units=6,
                       layer_lr=[0.01, 0.001, 0.0001], critic_lr_ratio=2.0)
    assert spec.layer_lr == (0.01, 0.001, 0.0001) and spec.lr_of(1) == 0.001
    net = build_network(spec, 0)
    assert [layer.optimizer.lr for layer in net.layers] == [0.01, 0.001, 0.0001]
    assert net.layers[1].critic is not None
    assert {o.lr for o in _optimizers(net.layers[1].critic)} == {0.002}  # its layer's x ratio
    one = NetworkSpec(n_inputs=4, n_outputs=3, hidden=(5, 4), lr=0.01)
    assert one.lrs() == (0.01,) and one.lr_of(2) == 0.01


def _optimizers(obj):
    found = []
    for value in vars(obj).values():
        if hasattr(value, "step") and hasattr(value, "lr"):
            found.append(value)
        elif isinstance(value, list):
            found += [v for v in value if hasattr(v, "step") and hasattr(v, "lr")]
    return found


@pytest.mark.parametrize("layer_lr, message", [
    ([0.01, 0.001], r"layer_lr needs one entry per layer agent \(3, bottom to top\), got 2"),
    ([0.01, 0.0, 0.1], r"layer_lr\[1\] must be > 0, got 0.0"),
    (0.01, "layer_lr must be a list of numbers"),
    ([0.1, "x", 0.1], r"layer_lr\[1\] must be a number"),
])
def test_bad_per_layer_learning_rates_name_the_problem(layer_lr, message):
    with pytest.raises(ConfigError, match=message):
        NetworkSpec(n_inputs=4, n_outputs=3, hidden=(5, 4), layer_lr=layer_lr)


def test_pretraining_asks_for_one_learning_rate():
    spec = NetworkSpec(n_inputs=4, n_outputs=1, task="regression", hidden=(5,),
                       units="gaussian", layer_lr=[0.01, 0.001])
    with pytest.raises(ConfigError, match="pre-training .* leave network.layer_lr empty"):
        spec.pretraining_twin()
