"""MLP backward pass by finite differences for every activation, the straight-through estimator
exactly as paper_method.md §2.7, and torch's nn.Linear initialisation (§2)."""

import numpy as np
import pytest

from async_coagents.core.mlp import MLP, affine_product, relu_inplace
from async_coagents.errors import CheckpointError, ConfigError
from tests.gradcheck import assert_grad_close, numeric_grad


@pytest.mark.parametrize("activation", ["identity", "relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("sizes", [[4, 3], [4, 5, 3], [3, 6, 4, 2]])
def test_backward_matches_finite_differences(activation, sizes):
    rng = np.random.default_rng(0)
    net = MLP(sizes, activation, rng=rng, dtype=np.float64)
    x = rng.normal(size=(7, sizes[0]))
    upstream = rng.normal(size=(7, sizes[-1]))

    def objective():
        return float((net(x) * upstream).sum())

    _, cache = net.forward(x)
    dx = net.backward(cache, upstream, input_grad=True)
    assert_grad_close(net.grad.copy(), numeric_grad(objective, net.params))
    assert_grad_close(dx, numeric_grad(objective, x))


def test_backward_without_input_grad_returns_none_and_overwrites_grad():
    rng = np.random.default_rng(1)
    net = MLP([3, 4, 2], "relu", rng=rng, dtype=np.float64)
    x = rng.normal(size=(5, 3))
    _, cache = net.forward(x)
    assert net.backward(cache, np.ones((5, 2))) is None
    first = net.grad.copy()
    net.backward(cache, np.ones((5, 2)))
    np.testing.assert_array_equal(net.grad, first)  # overwritten, not accumulated


def test_straight_through_forward_samples_and_backward_multiplies_by_the_bit():
    rng = np.random.default_rng(2)
    net = MLP([3, 4, 2], "straight_through", rng=rng, dtype=np.float64)
    x = rng.normal(size=(6, 3))
    out, cache = net.forward(x, np.random.default_rng(3))
    bits = cache[1]
    assert set(np.unique(bits)) <= {0.0, 1.0}
    z = x @ net.weights[0] + net.biases[0]
    # replaying the same uniforms reproduces the bits: h = 1[u < sigmoid(z)]
    u = np.random.default_rng(3).random(z.shape)
    np.testing.assert_array_equal(bits, (u < 1 / (1 + np.exp(-z))).astype(float))
    np.testing.assert_allclose(out, bits @ net.weights[1] + net.biases[1])
    upstream = rng.normal(size=(6, 2))
    dx = net.backward(cache, upstream, input_grad=True)
    dh = upstream @ net.weights[1].T
    dz = dh * bits  # §2.7: dL/dz := dL/dh * h (the sampled bit, not sigma')
    np.testing.assert_allclose(net.grad_weights[0], x.T @ dz)
    np.testing.assert_allclose(net.grad_biases[0], dz.sum(0))
    np.testing.assert_allclose(net.grad_weights[1], bits.T @ upstream)
    np.testing.assert_allclose(dx, dz @ net.weights[0].T)
    # greedy (evaluation) forward thresholds at 0.5
    greedy = net(x)
    np.testing.assert_allclose(greedy, (z > 0).astype(float) @ net.weights[1] + net.biases[1])


def test_straight_through_sampling_frequency():
    net = MLP([1, 1, 1], "straight_through", rng=np.random.default_rng(0), dtype=np.float64)
    net.weights[0][...] = 0.0
    net.biases[0][...] = np.log(3.0)  # sigmoid = 3/4
    _, cache = net.forward(np.zeros((40_000, 1)), np.random.default_rng(5))
    assert abs(cache[1].mean() - 0.75) < 0.01  # s.e. 0.0022


def test_init_is_uniform_within_one_over_sqrt_fan_in():
    net = MLP([400, 300], "identity", rng=np.random.default_rng(0), dtype=np.float64)
    bound = 1 / np.sqrt(400)
    w, b = net.weights[0], net.biases[0]
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    assert np.abs(w).max() > 0.99 * bound
    # U(-c, c) has variance c^2/3; 120,000 draws put the estimate within ~1 %
    assert w.var() == pytest.approx(bound**2 / 3, rel=0.03)
    assert abs(w.mean()) < 0.01 * bound


def test_params_are_views_of_one_flat_vector():
    net = MLP([3, 4, 2], "relu", rng=np.random.default_rng(0))
    net.params[...] = 0.0
    assert not net.weights[0].any() and not net.biases[1].any()
    assert net.params.size == 3 * 4 + 4 + 4 * 2 + 2


def test_zero_init_and_bad_sizes():
    assert not MLP([3, 1], zero_init=True).params.any()
    with pytest.raises(ConfigError, match="two positive sizes"):
        MLP([3])
    with pytest.raises(ConfigError, match="hidden activation"):
        MLP([3, 2], "gelu", rng=np.random.default_rng(0))
    with pytest.raises(ConfigError, match="init rng"):
        MLP([3, 2])


def test_load_params_checks_the_size():
    net = MLP([3, 2], rng=np.random.default_rng(0))
    with pytest.raises(CheckpointError, match="7 parameters"):
        net.load_params(np.zeros(7))


def _crafted(dtype) -> np.ndarray:
    """NaN, signed zeros, infinities, denormals, extremes and a large random tail."""
    info = np.finfo(dtype)
    special = np.array([np.nan, -np.nan, 0.0, -0.0, np.inf, -np.inf, info.smallest_subnormal,
                        -info.smallest_subnormal, info.tiny, -info.tiny, info.max, -info.max,
                        1.0, -1.0], dtype=dtype)
    tail = np.random.default_rng(0).normal(size=300_000).astype(dtype)
    return np.concatenate([special, tail])


@pytest.mark.parametrize("dtype, bits", [(np.float32, np.int32), (np.float64, np.int64)])
def test_relu_inplace_is_bit_identical_to_np_maximum(dtype, bits):
    x = _crafted(dtype)
    expected = np.maximum(x, 0.0)
    got = relu_inplace(x.copy())
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got.view(bits), expected.view(bits))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("replicas", [None, 3])
def test_call_is_bit_identical_to_forward(dtype, replicas):
    rng = np.random.default_rng(2)
    net = MLP([4, 50, 1], "relu", rng=rng, dtype=dtype, replicas=replicas)
    x = rng.normal(size=(1000, 4)).astype(dtype)
    x[:14, 0] = _crafted(dtype)[:14]  # NaN, +-0, +-inf and denormals through the network
    bits = np.int32 if dtype == np.float32 else np.int64
    np.testing.assert_array_equal(net(x).view(bits), net.forward(x)[0].view(bits))


def _same_numbers(a: np.ndarray, b: np.ndarray, bits) -> None:
    """Equal bit for bit, NaN aside (where both are NaN, whatever its sign bit)."""
    nan = np.isnan(a)
    np.testing.assert_array_equal(nan, np.isnan(b))
    np.testing.assert_array_equal(a[~nan].view(bits), b[~nan].view(bits))


@pytest.mark.parametrize("dtype, bits", [(np.float32, np.int32), (np.float64, np.int64)])
@pytest.mark.parametrize("shape", ["plain", "replicas", "shared-input"])
def test_a_one_column_product_plus_its_bias_is_blas_s_bit_for_bit(dtype, bits, shape):
    """The evaluation path computes a one-input-column product as a multiplication: plus the bias
    it equals ``h @ w + b`` in every bit (crafted values: NaN, +-0, infinities, denormals,
    extremes), and with a -0 bias it keeps BLAS's product."""
    rng = np.random.default_rng(4)
    values = _crafted(dtype)[:20_000]
    lead = {"plain": (), "replicas": (3,), "shared-input": ()}[shape]
    w_lead = (3,) if shape != "plain" else ()
    h = rng.permutation(values)[: 3000].reshape(*lead, -1, 1) if lead else values.reshape(-1, 1)
    w = np.concatenate([values[:14], rng.normal(size=36).astype(dtype)])
    w = np.broadcast_to(w, (*w_lead, 1, 50)).copy()
    for b in (rng.normal(size=(*w_lead, 1, 50)).astype(dtype),
              np.zeros((*w_lead, 1, 50), dtype), -np.zeros((*w_lead, 1, 50), dtype)):
        expected = h @ w
        expected += b
        got = affine_product(h, w, b)
        got += b
        assert got.shape == expected.shape and got.dtype == expected.dtype
        _same_numbers(got, expected, bits)


@pytest.mark.parametrize("replicas", [None, 3])
def test_call_on_one_input_column_is_bit_identical_to_forward(replicas):
    """A 1-D task's network (the correlated stream's 1 x 50): the multiplication path of
    ``__call__`` against ``forward``'s matrix product."""
    rng = np.random.default_rng(5)
    net = MLP([1, 50, 1], "relu", rng=rng, dtype=np.float32, replicas=replicas)
    x = rng.normal(size=(5000, 1)).astype(np.float32)
    x[:14, 0] = _crafted(np.float32)[:14]
    _same_numbers(net(x), net.forward(x)[0], np.int32)
