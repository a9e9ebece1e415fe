"""Every learning rule of the core, with every unit family, passes the shared rule checks
(``async_coagents.testing``); and the checks reject deliberately broken rules and agents (a check
that cannot fail proves nothing)."""

import numpy as np
import pytest

from async_coagents import testing
from async_coagents.core.network import NetworkSpec, build_network
from async_coagents.core.rules import RULES, GlobalBaseline, OffPolicyActorCritic, Reinforce
from async_coagents.core.units import Categorical
from async_coagents.errors import ConfigError

FAMILIES = testing.FAMILIES


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("rule", sorted(RULES))
def test_rule_passes_the_shared_checks(rule, family):
    if not testing._can_train(rule, family):
        pytest.skip(f"{rule} does not train the {family} network (its check_network says why)")
    # in process only, whatever earlier modules left running: local equals Ray is asserted for
    # every rule by tests/test_ray_backend.py (window 4, reward delay 3, as the suite's own check)
    # and for every family by tests/test_ray_toy_rule.py; the read-only and pickle checks here
    # catch what Ray's transport would
    testing.check_rule(rule, families=(family,), ray=False)


@pytest.mark.parametrize("spec", [
    dict(learner="backprop", n_inputs=4, n_outputs=3, hidden=(6,)),
    dict(learner="straight-through", n_inputs=4, n_outputs=3, hidden=(6, 5)),
    dict(learner="policy-gradient", n_inputs=3, n_outputs=1, task="regression", hidden=(6,),
         units="gaussian", rule="baseline"),
    dict(n_inputs=3, n_outputs=1, task="regression", hidden=(6, 5, 4), units="gaussian",
         activation="relu", partition="dsd"),
    dict(n_inputs=5, n_outputs=3, hidden=(8, 8), subset=3),
    dict(n_inputs=5, n_outputs=3, hidden=(8, 7), units_per_agent=3, update_every=(1, 2, 1)),
    dict(n_inputs=5, n_outputs=3, hidden=(8, 7), freeze_at=(2, None)),
    dict(n_inputs=5, n_outputs=3, hidden=(8, 7), units="categorical", n_actions=4,
         rule="ac-offpolicy", critic_units=8, dtype="float64"),
], ids=["backprop", "straight-through", "policy-gradient", "partition-dsd", "subset",
        "node-groups", "staged", "categorical-4-float64"])
def test_comparison_learners_and_variants_pass_the_shared_checks(spec):
    testing.check_network(lambda seed: build_network(NetworkSpec(**spec, lr=0.01), seed))


class Plain(Reinforce):
    """A rule defined outside the package (at module level: agents are pickled to other
    processes, so a rule class must be importable)."""

    name = "plain-outside-the-repo"


def test_a_rule_can_be_checked_by_class_with_one_call_and_is_not_left_registered():
    testing.check_rule(Plain, families=("bernoulli",))
    assert "plain-outside-the-repo" not in RULES


class PerUnitReturn(Reinforce):
    """A rule with one return per unit (G_bu = r_b + u/10): the layer's step weights each unit's
    score by its own return, as Weight Maximization's hidden units need."""

    name = "per-unit-return-outside-the-repo"

    def signal(self, step):
        return step.reward[:, None] + np.arange(step.action.shape[1]) / 10.0


class OwnPolicyGrad(Reinforce):
    """A rule that states dJ/dz itself (half the REINFORCE step), as HNCA does."""

    name = "own-policy-grad-outside-the-repo"

    def policy_grad(self, step):
        return 0.5 * super().policy_grad(step)


@pytest.mark.parametrize("rule", [PerUnitReturn, OwnPolicyGrad])
def test_per_unit_returns_and_own_policy_gradients_pass_the_suite(rule):
    testing.check_rule(rule, families=("bernoulli", "categorical-output"), ray=False)


class PerUnitWrongSign(PerUnitReturn):
    """Broken: one return per unit, each with the wrong sign."""

    name = "broken-per-unit-wrong-sign"

    def signal(self, step):
        return -super().signal(step)


def test_the_suite_rejects_per_unit_returns_with_the_wrong_sign():
    with pytest.raises(AssertionError, match="G must rise"):
        testing.check_rule(PerUnitWrongSign, families=("bernoulli",), ray=False)


class NeedsCategoricalOutput(Reinforce):
    name = "needs-categorical-output-outside-the-repo"

    @classmethod
    def check_network(cls, spec):
        if spec.resolved_output != "categorical":
            raise ConfigError(f"{cls.name} needs network.output = 'categorical'")


def test_a_rule_that_cannot_train_a_network_is_refused_at_build_and_skipped_by_the_suite():
    testing.check_rule(NeedsCategoricalOutput, ray=False)  # runs on the one network it trains
    from async_coagents.core.rules import register

    register(NeedsCategoricalOutput)
    try:
        with pytest.raises(ConfigError, match="needs network.output"):
            NetworkSpec(**FAMILIES["bernoulli"], rule=NeedsCategoricalOutput.name)
    finally:
        del RULES[NeedsCategoricalOutput.name]


# ---- broken rules the suite must reject ---------------------------------------------------------
class WrongSign(Reinforce):
    """Broken: ascends the loss (G = -r)."""

    name = "broken-wrong-sign"

    def signal(self, step):
        return -step.reward


class BaselineNeverSubtracted(GlobalBaseline):
    """Broken: learns its EMA baseline but never subtracts it."""

    name = "broken-unsubtracted-baseline"

    def signal(self, step):
        return self.returns(step)


class SampledOffPolicy(OffPolicyActorCritic):
    """Broken: an 'off-policy' critic chain whose message uses the sampled downstream action."""

    name = "broken-sampled-offpolicy"

    def evaluation_action(self, step):
        return step.out


@pytest.mark.parametrize("family", ["bernoulli", "gaussian"])
def test_the_suite_rejects_a_return_with_the_wrong_sign(family):
    with pytest.raises(AssertionError, match="wrong sign"):
        testing.check_rule(WrongSign, families=(family,))


@pytest.mark.parametrize("family", ["bernoulli", "gaussian"])
def test_the_suite_rejects_a_baseline_that_is_never_subtracted(family):
    with pytest.raises(AssertionError, match="never subtracted"):
        testing.check_rule(BaselineNeverSubtracted, families=(family,))


@pytest.mark.parametrize("family", ["bernoulli", "categorical", "gaussian"])
def test_the_suite_rejects_an_offpolicy_critic_target_at_the_sampled_action(family):
    with pytest.raises(AssertionError, match="greedy downstream action"):
        testing.check_rule(SampledOffPolicy, families=(family,))


def test_the_suite_rejects_a_step_that_is_not_the_rules_estimator():
    def make(seed):
        net = build_network(NetworkSpec(**FAMILIES["bernoulli"], rule="reinforce"), seed)
        layer = net.layers[1]
        step = layer._step

        def doubled_step(where=None):  # applies twice the gradient of the stated surrogate
            layer.net.grad *= 2.0
            step(where)

        layer._step = doubled_step
        return net

    with pytest.raises(AssertionError, match="not -lr times the gradient"):
        testing.check_rule_estimators(make)


# ---- broken mechanics the suite must reject -----------------------------------------------------
class GlobalRngCategorical(Categorical):
    """Broken: samples from numpy's global RNG instead of the layer's own stream."""

    def sample(self, dist, rng):
        return super().sample(dist, np.random.default_rng())


def broken_factory(unit_cls=Categorical, write_input=False):
    def make(seed):
        net = build_network(NetworkSpec(**FAMILIES["bernoulli"], rule="baseline"), seed)
        for layer in net.layers[:-1]:
            layer.unit = unit_cls(2, "unit")
            if write_input:
                forward = layer.forward

                def clobbering_forward(sid, x, forward=forward):
                    np.clip(x, -1, 1, out=x)  # writes into the caller's array
                    return forward(sid, x)

                layer.forward = clobbering_forward
        return net
    return make


def test_the_suite_catches_a_rule_that_uses_the_global_rng():
    with pytest.raises(AssertionError, match="bit-identical"):
        testing.check_determinism(broken_factory(GlobalRngCategorical))


def test_the_suite_catches_a_rule_that_writes_into_its_inputs():
    with pytest.raises(ValueError, match="read-only"):
        testing.check_read_only_inputs(broken_factory(write_input=True))


def test_the_suite_catches_a_layer_that_never_learns():
    def make(seed):
        net = build_network(NetworkSpec(**FAMILIES["bernoulli"], rule="reinforce"), seed)
        net.layers[1].optimizer.lr = 0.0
        return net

    with pytest.raises(AssertionError, match="layer1 never learnt"):
        testing.check_every_layer_learns_and_nothing_leaks(make)


def forgetful_factory(seed):
    net = build_network(NetworkSpec(**FAMILIES["bernoulli"], rule="baseline"), seed)
    for layer in net.layers[:-1]:  # forget the sampling stream in the saved state
        extra = layer._extra_state
        layer._extra_state = lambda extra=extra: {**extra(), "rng": None}
        load = layer._load_extra_state
        layer._load_extra_state = lambda s, load=load, layer=layer: (
            load({**s, "rng": layer.rng.bit_generator.state}))
    return net


def test_the_suite_catches_state_that_is_not_saved():
    with pytest.raises(AssertionError, match="continue bit-exactly"):
        testing.check_state_round_trip(forgetful_factory)


def test_the_suite_catches_in_flight_state_that_is_not_saved(monkeypatch):
    from async_coagents.core.agent import AgentBase

    state_dict = AgentBase.state_dict
    monkeypatch.setattr(AgentBase, "state_dict",
                        lambda self: {**state_dict(self), "pending": []})  # batches in flight lost
    with pytest.raises(AssertionError, match="with batches in flight must continue bit-exactly"):
        testing.check_round_trip_in_flight(testing.rule_factory("baseline", "bernoulli"))


def test_the_suite_catches_an_mlp_whose_views_do_not_survive_pickling(monkeypatch):
    from async_coagents.core.mlp import MLP

    monkeypatch.delattr(MLP, "__getstate__")
    monkeypatch.delattr(MLP, "__setstate__")
    with pytest.raises((AssertionError, ValueError)):
        testing.check_pickle_round_trip(testing.rule_factory("baseline", "bernoulli"))
