"""Weight Maximization on the Ray backend (one actor per layer): its per-unit messages, sent after
each layer's step, cross the actors and the run ends bit for bit like the local one, with batches
in flight and a reward delay (this module starts Ray: run it under the Ray lock)."""

import pytest

from async_coagents import testing
from async_coagents.core.network import NetworkSpec, build_network

pytestmark = pytest.mark.usefixtures("ray_session")


@pytest.mark.parametrize("family", ["categorical-output", "gaussian"])
def test_weight_max_on_ray_equals_local_with_batches_in_flight(family):
    assert testing.check_local_equals_ray(testing.rule_factory("weight-max", family))


def test_three_hidden_layers_of_per_unit_messages_end_alike_on_both_backends():
    spec = NetworkSpec(n_inputs=6, n_outputs=2, hidden=(7, 5, 4), units="bernoulli",
                       output="categorical", rule="weight-max", optimizer="adam", lr=0.02)
    assert testing.check_local_equals_ray(lambda seed: build_network(spec, seed), window=3,
                                          reward_delay=2)
