"""Evaluation metrics: task metrics and the per-layer entropy and sparsity of paper_method.md
§4.3-4.4, measured on the greedy pass, on a hand-made network."""

import math

import numpy as np
import pytest

from async_coagents.core.metrics import evaluate
from async_coagents.core.network import NetworkSpec, build_network
from async_coagents.core.objectives import Classification, Regression


def test_classification_and_regression_metrics():
    c = Classification(3)
    pred = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]))
    m = c.metrics(pred, np.array([0, 1]))
    assert m["accuracy"] == 0.5
    assert m["ce"] == pytest.approx(-(math.log(0.7) + math.log(0.1)) / 2)
    assert Regression().metrics(np.array([[1.0], [3.0]]), np.array([0.0, 1.0]))["mse"] == 2.5


def hand_made_network():
    """One hidden layer of 2 binary units on 1 input: unit 0 has P(1) = sigmoid(2x), unit 1 is
    always ~off; the read-out copies unit 0 into logit 1."""
    spec = NetworkSpec(n_inputs=1, n_outputs=2, hidden=(2,), dtype="float64")
    net = build_network(spec, 0)
    w, b = net.layers[0].policy.weights[0], net.layers[0].policy.biases[0]
    w[...] = [[0.0, 2.0, 0.0, 0.0]]  # columns: unit0 logit0, unit0 logit1, unit1 logit0, logit1
    b[...] = [0.0, 0.0, 30.0, 0.0]
    out_w, out_b = net.output.net.weights[0], net.output.net.biases[0]
    out_w[...] = [[0.0, 5.0], [0.0, 0.0]]
    out_b[...] = [2.5, 0.0]
    return net


def test_entropy_and_sparsity_follow_the_paper_definitions():
    net = hand_made_network()
    x = np.array([[-1.0], [0.0], [1.0], [2.0]])
    y = np.array([0, 0, 1, 1])
    m = evaluate(net, x, y, unit_entropy=True)
    p1 = 1 / (1 + np.exp(-2 * x[:, 0]))
    p = np.stack([1 - p1, p1], axis=1) + 1e-9
    h_unit0 = float(np.mean(-(p * np.log(p)).sum(axis=1)))
    q = np.array([1 / (1 + math.exp(-30)), math.exp(-30) / (1 + math.exp(-30))]) + 1e-9
    h_unit1 = float(-(q * np.log(q)).sum())
    assert m["unit_entropy"][0] == pytest.approx([h_unit0, h_unit1])
    assert m["entropy"] == [pytest.approx((h_unit0 + h_unit1) / 2)]
    assert m["entropy_std"] == [pytest.approx(abs(h_unit0 - h_unit1) / 2)]  # std of two values
    # greedy outputs: unit0 is 1 for x > 0 (x = 1, 2), unit1 is always 0
    assert m["sparsity"] == [pytest.approx(2 / 8)]
    assert m["accuracy"] == 1.0  # greedy hidden state 1 -> logit1 = 5 > 2.5


def test_chunked_evaluation_equals_one_pass():
    net = build_network(NetworkSpec(n_inputs=4, n_outputs=3, hidden=(10, 7)), 0)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(101, 4)).astype(np.float32), rng.integers(0, 3, 101)
    whole, chunked = evaluate(net, x, y, chunk=1000), evaluate(net, x, y, chunk=16)
    assert whole["accuracy"] == chunked["accuracy"]
    np.testing.assert_allclose(whole["entropy"], chunked["entropy"], rtol=1e-6)
    np.testing.assert_allclose(whole["sparsity"], chunked["sparsity"])
    assert len(whole["entropy"]) == 2


def test_gaussian_layers_report_activity_rate_and_backprop_reports_no_layers():
    spec = NetworkSpec(n_inputs=2, n_outputs=1, task="regression", hidden=(5,), units="gaussian",
                       activation="relu", dtype="float64")
    net = build_network(spec, 0)
    x = np.random.default_rng(1).normal(size=(50, 2))
    m = evaluate(net, x, np.zeros(50))
    mu = x @ net.layers[0].policy.weights[0] + net.layers[0].policy.biases[0]
    assert m["sparsity"] == [pytest.approx(float((mu > 0).mean()))]
    assert set(m) >= {"mse", "entropy", "sparsity"}
    bp = build_network(NetworkSpec(n_inputs=2, n_outputs=1, task="regression", learner="backprop"), 0)
    assert evaluate(bp, x, np.zeros(50))["entropy"] == []
