"""Baselines: the EMA schedule of paper_method.md §3.2 step by step, and the linear state
baselines of §3.4-3.5 (zero init, gradient, advantage with the pre-update value)."""

import numpy as np
import pytest

from async_coagents.core.baselines import EmaBaseline, StateBaseline
from async_coagents.core.optim import make_optimizer
from async_coagents.errors import ConfigError
from tests.gradcheck import assert_grad_close, numeric_grad


def test_ema_schedule_step_by_step():
    b = EmaBaseline(0.99)
    s = np.zeros((2, 1))
    r1, r2, r3 = np.array([1.0, 3.0]), np.array([0.0, 2.0]), np.array([5.0, 5.0])
    # batch 1: nothing is subtracted
    np.testing.assert_array_equal(b.advantage(r1, s), r1)
    b.learn(r1, s)  # initialised to mean(r1) = 2, then updated once with mean(r1): still 2
    assert b.value == pytest.approx(2.0)
    np.testing.assert_allclose(b.advantage(r2, s), r2 - 2.0)
    b.learn(r2, s)
    assert b.value == pytest.approx(0.99 * 2.0 + 0.01 * 1.0)
    np.testing.assert_allclose(b.advantage(r3, s), r3 - 1.99)
    b.learn(r3, s)
    assert b.value == pytest.approx(0.99 * 1.99 + 0.01 * 5.0)


def test_frozen_ema_never_changes():
    b = EmaBaseline(0.99, frozen=True)
    b.learn(np.ones(3), np.zeros((3, 1)))
    assert b.value is None
    with pytest.raises(ConfigError, match="baseline_decay"):
        EmaBaseline(1.0)


def test_state_baseline_is_zero_initialised_and_regresses_to_the_reward():
    rng = np.random.default_rng(0)
    s, r = rng.normal(size=(8, 3)), rng.normal(size=8)
    b = StateBaseline(3, make_optimizer("sgd", 4, 1.0, np.float64), np.float64)
    np.testing.assert_array_equal(b.advantage(r, s), r)  # V = 0 before any update
    b.value_fn.params[...] = rng.normal(size=4)
    before = b.value_fn.params.copy()

    def mse():
        return float(np.mean((b.values(s) - r) ** 2))

    expected = numeric_grad(mse, b.value_fn.params)
    b.learn(r, s)
    assert_grad_close(before - b.value_fn.params, expected)


def test_state_baseline_learns_a_linear_reward():
    rng = np.random.default_rng(1)
    b = StateBaseline(2, make_optimizer("adam", 3, 0.05, np.float64), np.float64)
    for _ in range(2000):
        s = rng.normal(size=(16, 2))
        b.learn(s @ np.array([1.0, -2.0]) + 0.5, s)
    np.testing.assert_allclose(b.value_fn.params, [1.0, -2.0, 0.5], atol=0.02)
