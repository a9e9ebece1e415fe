"""The per-layer gradient-variance training metric (``run.record_grad_variance``,
``core/grad_variance.py``): its rows in metrics.jsonl, its value against the trace of the
covariance of per-example gradients formed one by one, resume mid-interval, the partition groups
and one-example batches that have none. Local equals Ray: tests/test_ray_grad_variance.py."""

import numpy as np
import pytest

from async_coagents.backends.local import LocalBackend
from async_coagents.core.grad_variance import batch_trace
from async_coagents.core.layers import CoagentLayer
from async_coagents.core.network import NetworkSpec, build_network
from async_coagents.experiment.run import RunDirectory, resume, train
from tests.test_run import quick_config, rows_without_timing, stopped_run


def test_a_run_records_grad_variance_per_layer_agent(tmp_path):
    train(quick_config(**{"run.record_grad_variance": "true"}), tmp_path / "on", progress=False)
    rows = RunDirectory(tmp_path / "on").metrics()
    assert rows[0]["grad_variance"] == [None, None, None]  # no batch yet
    for row in rows[1:]:
        *hidden, readout = row["grad_variance"]
        assert len(hidden) == 2 and readout is None  # a read-out is not a coagent layer
        assert all(isinstance(v, float) and v > 0 for v in hidden)
    train(quick_config(), tmp_path / "off", progress=False)
    assert all("grad_variance" not in row for row in RunDirectory(tmp_path / "off").metrics())


def test_grad_variance_is_the_trace_of_the_covariance_of_per_example_gradients():
    """One batch, every coagent layer (the categorical output too): the metric equals the trace
    of np.cov of the example gradients, each formed by its own backward pass."""
    net = build_network(NetworkSpec(n_inputs=5, n_outputs=3, hidden=(6, 4), units="bernoulli",
                                    output="categorical", rule="baseline", dtype="float64"), 4)
    net.record_grad_variance()
    seen = {}
    for layer in net.layers:
        def capture(step, layer=layer, policy_grad=layer.rule.policy_grad):
            dz = policy_grad(step)
            seen[layer.name] = (step.state.copy(), dz.copy())
            return dz
        layer.rule.policy_grad = capture
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 5)), rng.integers(0, 3, 8)
    backend = LocalBackend(net)
    backend.submit(0, x, y)
    backend.finish()
    measured = backend.take_grad_variance()
    for layer, value in zip(net.layers, measured, strict=True):
        state, dz = seen[layer.name]
        examples = []
        for b in range(len(state)):
            _, cache = layer.policy.forward(state[b:b + 1])
            layer.policy.backward(cache, len(state) * dz[b:b + 1])
            examples.append(layer.policy.grad.copy())
        expected = np.trace(np.cov(np.array(examples), rowvar=False))
        assert value == pytest.approx(expected, rel=1e-10), layer.name
        assert value > 0
    assert backend.take_grad_variance() == [None, None, None]  # a new interval


def test_a_partition_group_has_no_grad_variance_and_one_example_no_covariance():
    spec = NetworkSpec(n_inputs=3, n_outputs=1, task="regression", hidden=(6, 5),
                       units="gaussian", partition="ds", activation="relu")
    net = build_network(spec, 0)
    net.record_grad_variance()
    backend = LocalBackend(net)
    backend.submit(0, np.ones((4, 3), np.float32), np.zeros(4, np.float32))
    backend.finish()
    group, output = backend.take_grad_variance()
    assert group is None and output > 0
    assert isinstance(net.layers[0], CoagentLayer) and len(net.layers[0].policy.sizes) == 3
    assert batch_trace(np.ones((1, 3)), np.ones((1, 2)), np.ones(8)) is None


def test_resume_mid_interval_keeps_the_grad_variance_rows(tmp_path):
    config = quick_config(**{"run.record_grad_variance": "true", "backend.window": 3,
                             "backend.reward_delay": 2})
    train(config, tmp_path / "whole", progress=False)
    assert stopped_run(config, tmp_path / "split", stop_after=57)["status"] == "interrupted"
    assert resume(tmp_path / "split", progress=False)["status"] == "completed"
    whole = rows_without_timing(tmp_path / "whole")
    assert whole == rows_without_timing(tmp_path / "split")
    assert whole[2]["grad_variance"][0] > 0  # the row after the stop
