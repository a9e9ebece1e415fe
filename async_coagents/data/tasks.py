"""Generated tasks, no download: the k-address-bit multiplexer and the paper's correlated
regression stream (§5.3) — its knobs, variances, walk of means, targets and evaluation sets.
The correlated training stream itself is ``streams.CorrelatedStream``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from async_coagents.data._knobs import (
    Key,
    SeedLike,
    as_seed_sequence,
    check_int,
    check_unit_interval,
    derive_rng,
)
from async_coagents.data.datasets import Dataset, Split
from async_coagents.errors import ConfigError

MAX_ADDRESS_BITS = 4  # 4 + 16 = 20 inputs, a truth table of 2**20 patterns

# §5.3: fixed bound b = 1, overall stationary variance V = (b/2)**2.
BOUND = 1.0
STATIONARY_VARIANCE = (BOUND / 2) ** 2


def multiplexer(address_bits: int = 2) -> Dataset:
    """The k-address-bit multiplexer: k address bits select one of 2**k data bits; label = it.

    Inputs are ``n = k + 2**k`` bits encoded as -1.0 (bit 0) / +1.0 (bit 1), float32: columns
    ``0..k-1`` are the address (most significant first), columns ``k..n-1`` the data bits, and
    the label (int64, 2 classes) is the data bit at column ``k + address``. Every split holds the
    full truth table, x (2**n, n) and y (2**n,), patterns in binary counting order; train on it
    with ``streams.UniformPatterns`` (i.i.d. uniform draws).

    >>> task = multiplexer(2)
    >>> task.n_features, len(task.train)
    (6, 64)
    """
    k = check_int("address_bits", address_bits, minimum=1)
    if k > MAX_ADDRESS_BITS:
        raise ConfigError(f"address_bits must be at most {MAX_ADDRESS_BITS}, got {k}")
    n = k + 2**k
    patterns = np.arange(2**n, dtype=np.int64)
    bits = (patterns[:, None] >> np.arange(n - 1, -1, -1)) & 1
    table = Split(x=(2 * bits - 1).astype(np.float32), y=multiplexer_labels(bits, k))
    return Dataset(
        name="multiplexer",
        kind="classification",
        n_classes=2,
        n_features=n,
        train=table,
        valid=table,
        test=table,
    )


def multiplexer_labels(bits: np.ndarray, address_bits: int) -> np.ndarray:
    """Labels (N,) int64 of patterns ``bits`` (N, k + 2**k), given as 0/1 or as -1/+1."""
    on = np.asarray(bits) > 0
    weights = 2 ** np.arange(address_bits - 1, -1, -1)
    address = on[:, :address_bits] @ weights
    return on[np.arange(on.shape[0]), address_bits + address].astype(np.int64)


@dataclass(frozen=True)
class CorrelatedSpec:
    """Knobs of the correlated stream (§5.3) and the quantities derived from them.

    ``difficulty`` d in [0, 1] moves variance from within a block to between blocks; ``means``
    M mean-blocks of ``segments`` S minibatches of ``batch`` B one-dimensional inputs each.
    """

    difficulty: float
    means: int
    segments: int
    batch: int = 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "difficulty", check_unit_interval("difficulty", self.difficulty))
        for knob in ("means", "segments", "batch"):
            object.__setattr__(self, knob, check_int(knob, getattr(self, knob)))

    @property
    def segment_variance(self) -> float:
        """σ²_seg = (1 − d)·V, the variance of x within one mean-block."""
        return (1.0 - self.difficulty) * STATIONARY_VARIANCE

    @property
    def walk_variance(self) -> float:
        """σ²_walk = d·V, the stationary variance of the block means."""
        return self.difficulty * STATIONARY_VARIANCE

    @property
    def noise_variance(self) -> float:
        """σ²_noise = d²·V, the variance of one innovation of the walk."""
        return self.difficulty**2 * STATIONARY_VARIANCE

    @property
    def rho(self) -> float:
        """ρ = √(1 − d), the AR(1) coefficient of the walk (lag-1 correlation of block means)."""
        return math.sqrt(1.0 - self.difficulty)

    @property
    def total_batches(self) -> int:
        """M·S minibatches in the one pass."""
        return self.means * self.segments

    @property
    def eval_size(self) -> int:
        """⌊M·S·B/100⌋ points in each of the validation and test sets."""
        return self.means * self.segments * self.batch // 100


def correlated_means(spec: CorrelatedSpec, rng: np.random.Generator) -> np.ndarray:
    """The M block means (M,) float64: m_1 ~ N(0, dV), m_{k+1} = ρ m_k + σ_noise ε_k.

    With d = 0 every mean is exactly 0; with d = 1 they are i.i.d. N(0, V).
    """
    eps = rng.standard_normal(spec.means)
    sigma_noise = math.sqrt(spec.noise_variance)
    means = np.empty(spec.means)
    m = math.sqrt(spec.walk_variance) * float(eps[0])
    means[0] = m
    for k in range(1, spec.means):
        m = spec.rho * m + sigma_noise * float(eps[k])
        means[k] = m
    return means


def correlated_target(x: np.ndarray) -> np.ndarray:
    """y = sin(2π x²), computed in float64 from ``x`` and returned as float32, same shape."""
    x = np.asarray(x, dtype=np.float64)
    return np.sin(2.0 * np.pi * x * x).astype(np.float32)


#: Points of each mean-block's own test set (``run.online_metrics`` on the correlated stream).
BLOCK_TEST_POINTS = 256


def correlated_block_test_set(spec: CorrelatedSpec, seed: SeedLike, block: int,
                              mean: float) -> Split:
    """Mean-block ``block``'s own test set: ``BLOCK_TEST_POINTS`` i.i.d. x ~ N(m_k, (1 − d)V),
    what that block's batches are drawn from, with y = sin(2π x²); its own random stream.
    """
    z = derive_rng(as_seed_sequence(seed), Key.CORRELATED_BLOCK_TEST, block).standard_normal(
        (BLOCK_TEST_POINTS, 1))
    x = (mean + math.sqrt(spec.segment_variance) * z).astype(np.float32)
    return Split(x=x, y=correlated_target(x[:, 0]))


def correlated_eval_sets(spec: CorrelatedSpec, seed: SeedLike) -> tuple[Split, Split]:
    """The validation and test sets: two independent i.i.d. samples from N(0, V).

    Each is a ``Split`` with x (⌊MSB/100⌋, 1) float32 and y = sin(2π x²) float32.
    """
    seed = as_seed_sequence(seed)
    splits = []
    for key in (Key.CORRELATED_VALID, Key.CORRELATED_TEST):
        z = derive_rng(seed, key).standard_normal((spec.eval_size, 1))
        x = (math.sqrt(STATIONARY_VARIANCE) * z).astype(np.float32)
        splits.append(Split(x=x, y=correlated_target(x[:, 0])))
    return splits[0], splits[1]
