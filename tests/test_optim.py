"""Optimizer steps against hand-computed values (paper_method.md §6.1)."""

import math

import numpy as np
import pytest

from async_coagents.core.optim import make_optimizer
from async_coagents.errors import CheckpointError, ConfigError

G1 = np.array([0.5, -2.0, 0.0])
G2 = np.array([-1.0, 1.0, 3.0])


def run(name, grads, lr=0.1, **hyper):
    theta = np.array([1.0, 1.0, 1.0])
    opt = make_optimizer(name, 3, lr, np.float64, **hyper)
    for g in grads:
        opt.step(theta, g.copy())
    return theta, opt


def test_sgd():
    theta, _ = run("sgd", [G1, G2])
    np.testing.assert_allclose(theta, 1.0 - 0.1 * (G1 + G2))


def test_rmsprop_two_steps_by_hand():
    theta, opt = run("rmsprop", [G1, G2])
    v1 = 0.01 * G1**2
    t1 = 1.0 - 0.1 * G1 / (np.sqrt(v1) + 1e-8)
    v2 = 0.99 * v1 + 0.01 * G2**2
    t2 = t1 - 0.1 * G2 / (np.sqrt(v2) + 1e-8)
    np.testing.assert_allclose(theta, t2, rtol=1e-12, atol=1e-14)
    # first step of RMSprop moves every coordinate with a non-zero gradient by ~ 10 lr
    assert t1[0] == pytest.approx(1.0 - 0.1 * 0.5 / (0.05 + 1e-8))
    np.testing.assert_allclose(opt.v, v2)


def test_rmsprop_custom_beta():
    theta, _ = run("rmsprop", [G1], beta=0.9)
    np.testing.assert_allclose(theta, 1.0 - 0.1 * G1 / (np.sqrt(0.1 * G1**2) + 1e-8))


def test_adam_two_steps_by_hand_in_torch_form():
    theta, _ = run("adam", [G1, G2])
    b1, b2, eps, lr = 0.9, 0.999, 1e-8, 0.1
    m = v = np.zeros(3)
    t = np.ones(3)
    for step, g in enumerate([G1, G2], start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        t = t - lr / (1 - b1**step) * m / (np.sqrt(v) / math.sqrt(1 - b2**step) + eps)
    np.testing.assert_allclose(theta, t, rtol=1e-12, atol=1e-14)
    # the first Adam step is ~ lr * sign(g)
    first, _ = run("adam", [G1])
    np.testing.assert_allclose(first[:2], 1.0 - 0.1 * np.sign(G1[:2]), rtol=1e-6)


@pytest.mark.parametrize("name", ["sgd", "rmsprop", "adam"])
def test_state_dict_round_trip_continues_identically(name):
    theta_a, opt_a = run(name, [G1])
    theta_b = theta_a.copy()
    opt_b = make_optimizer(name, 3, 0.1, np.float64)
    opt_b.load_state_dict(opt_a.state_dict())
    opt_a.step(theta_a, G2.copy())
    opt_b.step(theta_b, G2.copy())
    np.testing.assert_array_equal(theta_a, theta_b)


def test_bad_settings_and_foreign_state():
    with pytest.raises(ConfigError, match="optimizer must be one of"):
        make_optimizer("adagrad", 3, 0.1)
    with pytest.raises(ConfigError, match="learning rate"):
        make_optimizer("sgd", 3, -1.0)
    with pytest.raises(ConfigError, match="beta1"):
        make_optimizer("adam", 3, 0.1, beta1=1.0)
    with pytest.raises(ConfigError, match="optimizer 'sgd'"):
        make_optimizer("sgd", 3, 0.1, beta=0.9)
    _, adam = run("adam", [G1])
    with pytest.raises(CheckpointError, match="'adam'"):
        make_optimizer("rmsprop", 3, 0.1).load_state_dict(adam.state_dict())
    with pytest.raises(CheckpointError, match="shape"):
        make_optimizer("adam", 4, 0.1).load_state_dict(adam.state_dict())
