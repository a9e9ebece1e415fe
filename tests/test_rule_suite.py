"""Every learning rule of the core, with every unit family, passes the shared rule checks; and the
checks catch deliberately broken rules (a check that cannot fail proves nothing)."""

import numpy as np
import pytest

from async_coagents.core.network import NetworkSpec, build_network
from async_coagents.core.rules import RULES
from async_coagents.core.units import Categorical
from tests import rule_checks

FAMILIES = {
    "bernoulli": dict(n_inputs=5, n_outputs=3, hidden=(6, 5, 4), units="bernoulli"),
    "categorical": dict(n_inputs=5, n_outputs=3, hidden=(6, 5), units="categorical", n_actions=3,
                        normalisation="symmetric"),
    "gaussian": dict(n_inputs=3, n_outputs=1, task="regression", hidden=(6, 5), units="gaussian",
                     activation="relu"),
}


def factory(rule: str, family: str):
    extra = {"reinforce_updates": 3} if RULES[rule].reinforce_phase else {}

    def make(seed: int):
        spec = NetworkSpec(**FAMILIES[family], rule=rule, critic_units=8, lr=0.01, **extra)
        return build_network(spec, seed)

    return make


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("rule", sorted(RULES))
def test_rule_passes_the_shared_checks(rule, family):
    rule_checks.check_rule(factory(rule, family))


@pytest.mark.parametrize("spec", [
    dict(learner="backprop", n_inputs=4, n_outputs=3, hidden=(6,)),
    dict(learner="straight-through", n_inputs=4, n_outputs=3, hidden=(6, 5)),
    dict(learner="policy-gradient", n_inputs=3, n_outputs=1, task="regression", hidden=(6,),
         units="gaussian", rule="baseline"),
    dict(n_inputs=3, n_outputs=1, task="regression", hidden=(6, 5, 4), units="gaussian",
         activation="relu", partition="dsd"),
    dict(n_inputs=5, n_outputs=3, hidden=(8, 8), subset=3),
    dict(n_inputs=5, n_outputs=3, hidden=(8, 7), units_per_agent=3, update_every=(1, 2, 1)),
], ids=["backprop", "straight-through", "policy-gradient", "partition-dsd", "subset",
        "node-groups"])
def test_comparison_learners_and_variants_pass_the_shared_checks(spec):
    rule_checks.check_rule(lambda seed: build_network(NetworkSpec(**spec, lr=0.01), seed))


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
        rule_checks.check_determinism(broken_factory(GlobalRngCategorical))


def test_the_suite_catches_a_rule_that_writes_into_its_inputs():
    with pytest.raises(ValueError, match="read-only"):
        rule_checks.check_read_only_inputs(broken_factory(write_input=True))


def test_the_suite_catches_a_layer_that_never_learns():
    def make(seed):
        net = build_network(NetworkSpec(**FAMILIES["bernoulli"], rule="reinforce"), seed)
        net.layers[1].optimizer.lr = 0.0
        return net

    with pytest.raises(AssertionError, match="layer1 never learnt"):
        rule_checks.check_every_layer_learns_and_nothing_leaks(make)


def test_the_suite_catches_state_that_is_not_saved():
    def make(seed):
        net = build_network(NetworkSpec(**FAMILIES["bernoulli"], rule="baseline"), seed)
        for layer in net.layers[:-1]:  # forget the sampling stream in the saved state
            extra = layer._extra_state
            layer._extra_state = lambda extra=extra: {**extra(), "rng": None}
            load = layer._load_extra_state
            layer._load_extra_state = lambda s, load=load, layer=layer: (
                load({**s, "rng": layer.rng.bit_generator.state}))
        return net

    with pytest.raises(AssertionError, match="continue bit-exactly"):
        rule_checks.check_state_round_trip(make)


def test_the_suite_catches_an_mlp_whose_views_do_not_survive_pickling(monkeypatch):
    from async_coagents.core.mlp import MLP

    monkeypatch.delattr(MLP, "__getstate__")
    monkeypatch.delattr(MLP, "__setstate__")
    with pytest.raises((AssertionError, ValueError)):
        rule_checks.check_pickle_round_trip(factory("baseline", "bernoulli"))
