"""The package, trained in the synchronous reference order (the local backend with one batch in
flight and no reward delay), against an independent monolithic implementation of the paper's
training step written from ``paper_method.md`` (``tests/reference/``), for every learning rule
and unit family: reinforce, the EMA, input-state and per-layer baselines, on- and off-policy
critics and the §3.9 reconstructions; Bernoulli, categorical K = 3 and 5 under the three
normalisations, Gaussian identity and ReLU units with the Gaussian output coagent (the paper's
correlated experiment among them) and in partition groups; subsets, staged freezing; RMSprop, Adam
and SGD.

How close, and why. No case is equal bit for bit: the two implementations evaluate the same
formulas in different orders (e.g. ``lr * g / (sqrt(v) + eps)`` against ``g / (sqrt(v) + eps) * lr``),
so an operation may differ in its last bit, and training amplifies such differences (an RMSprop
step divides by a running gradient scale; with large steps the amplification is exponential, which
is why the cases use lr 2^-8, not 0.01). Compared per array, relative to the array's largest
magnitude, after 30 steps:

* float64 networks (all cases but two): within ``1e-10``. Measured: 1e-16 to 1.5e-13 (the largest
  for categorical K = 5 with index states under ``ac``);
* float32 networks (the correlated experiment in the package's default dtype, and one Bernoulli
  case): within ``1e-5``, about a hundred float32 roundings. Measured: 1.4e-7 and 9.3e-7.

A modelling difference of one detail (the rule's target, a normalisation, the activation, sigma,
the optimizer, a subset's redraw, a freeze one batch later) moves the weights by more than 0.1 of
their scale in 30 steps (:func:`test_the_comparison_sees_a_change_of_one_detail` asks for 1e-3),
so these tolerances cannot hide one.
"""

from dataclasses import replace

import numpy as np
import pytest

from tests.reference import package
from tests.reference.monolith import Case, Monolith

GAUSSIAN = {"units": "gaussian", "output": "gaussian", "hidden": (7, 6)}
GAUSSIAN_REGRESSION = {**GAUSSIAN, "activation": "relu", "task": "regression", "n_outputs": 1}
#: §6.5 "even_longer" d = 0.95: 1x50 Gaussian ReLU units, a Gaussian output coagent, REINFORCE
#: with the EMA baseline, RMSprop lr 2^-9, sigma 2, batch 32, one input.
CORRELATED = {**GAUSSIAN_REGRESSION, "hidden": (50,), "n_inputs": 1, "sigma": 2.0,
              "lr": 2.0 ** -9, "rule": "baseline", "batch": 32}

CASES = [
    # every rule on the paper's main network family: Bernoulli units, a supervised read-out
    Case("reinforce"),
    Case("baseline", rule="baseline"),
    Case("input-baseline", rule="input-baseline"),
    Case("layer-baseline", rule="layer-baseline"),
    Case("ac", rule="ac"),
    Case("ac-offpolicy", rule="ac-offpolicy"),
    Case("ac-mc", rule="ac-mc"),
    Case("ac-reinforce", rule="ac-reinforce", reinforce_updates=10),
    Case("ac-offpolicy-reinforce", rule="ac-offpolicy-reinforce", reinforce_updates=10),
    Case("ac-offpolicy-2-critic-layers", rule="ac-offpolicy", critic_layers=2),
    Case("ac-linear-critic", rule="ac", critic_layers=0),
    Case("baseline-regression-readout", rule="baseline", task="regression", n_outputs=1),
    # categorical units, K = 3 and 5, the three normalisations (§2.2)
    *[Case(f"categorical-k{k}-{norm}", units="categorical", n_actions=k, normalisation=norm,
           rule="baseline") for k in (3, 5) for norm in ("index", "unit", "symmetric")],
    Case("categorical-k3-symmetric-ac-offpolicy", units="categorical", n_actions=3,
         normalisation="symmetric", rule="ac-offpolicy"),
    Case("categorical-k5-index-ac", units="categorical", n_actions=5, normalisation="index",
         rule="ac"),
    Case("categorical-k5-unit-layer-baseline", units="categorical", n_actions=5,
         rule="layer-baseline"),
    # Gaussian units and the Gaussian output coagent (§2.5, §3.3)
    Case("correlated-experiment", **CORRELATED),
    Case("correlated-experiment-float32", **CORRELATED, dtype="float32"),
    Case("gaussian-identity-classification-reinforce", **GAUSSIAN),
    Case("gaussian-identity-classification-baseline", **GAUSSIAN, rule="baseline"),
    Case("gaussian-relu-input-baseline", **GAUSSIAN_REGRESSION, rule="input-baseline"),
    Case("gaussian-relu-layer-baseline", **GAUSSIAN_REGRESSION, rule="layer-baseline"),
    Case("gaussian-identity-ac", **GAUSSIAN, rule="ac"),
    Case("gaussian-relu-ac-offpolicy", **GAUSSIAN_REGRESSION, rule="ac-offpolicy"),
    Case("gaussian-units-readout", units="gaussian", hidden=(7, 6), rule="baseline"),
    # partition groups of Gaussian ReLU units, back-propagating inside a group only (§2.6)
    *[Case(f"partition-{p}", **{**GAUSSIAN_REGRESSION, "hidden": (7, 6, 5)[:len(p)]}, partition=p,
           rule=rule) for p, rule in [("ds", "baseline"), ("sd", "reinforce"), ("dd", "baseline"),
                                      ("dsd", "layer-baseline"), ("sds", "input-baseline")]],
    # subsets (§2.3) and staged freezing (§2.4)
    Case("subset-every-batch", subset=3),
    Case("subset-every-4-batches", subset=2, subset_every=4, rule="baseline"),
    Case("staged", freeze_at=(5, 12, None)),
    Case("staged-layer0-greedy-from-the-start", freeze_at=(0, 8, None), rule="baseline"),
    # the optimizers in torch's form (§6.1)
    Case("adam-baseline", optimizer="adam", rule="baseline"),
    Case("adam-ac-offpolicy", optimizer="adam", rule="ac-offpolicy"),
    Case("sgd-reinforce", optimizer="sgd", lr=0.1),
    Case("sgd-gaussian-baseline", **GAUSSIAN_REGRESSION, optimizer="sgd", lr=0.01,
         rule="baseline"),
    Case("bernoulli-float32-baseline", rule="baseline", dtype="float32"),
]

TOLERANCE = {"float64": 1e-10, "float32": 1e-5}


def correlated_stream(case: Case, difficulty: float = 0.95, segments: int = 10):
    """§5.3: block means an AR(1) walk in its stationary regime, ``segments`` i.i.d. batches of
    N(m_k, (1 - d) V) around each, ``y = sin(2 pi x^2)``; V = 1/4."""
    rng = np.random.default_rng(0)
    v = 0.25
    rho, noise = np.sqrt(1 - difficulty), np.sqrt(difficulty**2 * v)
    m = rng.normal(0, np.sqrt(difficulty * v))
    batches = []
    while len(batches) < case.steps:
        for _ in range(segments):
            x = rng.normal(m, np.sqrt((1 - difficulty) * v), size=(case.batch, 1))
            batches.append((x, np.sin(2 * np.pi * x[:, 0] ** 2)))
        m = rho * m + noise * rng.normal()
    return batches[:case.steps]


def batches(case: Case):
    """The §5.3 stream for the one-input (correlated) networks; else normal inputs with random
    labels, or a smooth regression target."""
    if case.n_inputs == 1:
        return correlated_stream(case)
    rng = np.random.default_rng(0)
    out = []
    for _ in range(case.steps):
        x = rng.normal(size=(case.batch, case.n_inputs))
        if case.task == "classification":
            y = rng.integers(0, case.n_outputs, case.batch)
        else:
            y = np.tanh(x[:, :3].sum(axis=1))
        out.append((x, y))
    return out


def train_both(case: Case, reference: Case | None = None):
    """Train the package on ``case`` and the monolith on ``reference`` (default: the same case)
    from the same initial weights and data; returns both final states, both losses, the start."""
    network = package.build(case)
    init = package.initial_weights(network)
    monolith = Monolith(reference or case, init)
    data = batches(case)
    want_losses = [monolith.step(x, y) for x, y in data]
    got_losses = package.train(network, data)
    return package.final_arrays(network), monolith.arrays(), got_losses, want_losses, init


def deviation(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| relative to the largest magnitude of ``want``."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-300))


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_package_matches_the_monolithic_reference(case):
    got, want, got_losses, want_losses, init = train_both(case)
    tol = TOLERANCE[case.dtype]
    assert sorted(got) == sorted(want)  # the same learnt quantities exist on both sides
    for name in want:
        assert deviation(got[name], want[name]) <= tol, name
    np.testing.assert_allclose(got_losses, want_losses, rtol=tol)
    # the comparison is not between untouched copies: every agent learnt, except a layer frozen
    # from the first batch, which never changes (§2.4)
    for j, net in enumerate(init.policy):
        frozen_from_start = case.freeze_at is not None and j < len(case.freeze_at) and (
            case.freeze_at[j] == 0)
        for k, (w, _) in enumerate(net):
            assert np.array_equal(want[f"W{j}.{k}"], w) == frozen_from_start, f"W{j}.{k}"
    if case.rule == "baseline" and case.freeze_at is None:  # every agent's copy of the EMA is
        emas = {float(got[name]) for name in got if name.startswith("ema")}  # the same (§3.2)
        assert len(emas) == 1 and emas != {0.0}


#: (case, one detail changed for the monolith only): the comparison must see each of them.
ONE_DETAIL = [
    ("reinforce", {"rule": "baseline"}),
    ("baseline", {"rule": "input-baseline"}),
    ("input-baseline", {"rule": "layer-baseline"}),
    ("ac", {"rule": "ac-offpolicy"}),
    ("ac", {"rule": "ac-mc"}),
    ("ac", {"rule": "ac-reinforce", "reinforce_updates": 10}),
    ("ac-offpolicy", {"rule": "ac-offpolicy-reinforce", "reinforce_updates": 10}),
    ("categorical-k3-index", {"normalisation": "unit"}),
    ("categorical-k5-unit", {"normalisation": "symmetric"}),
    ("correlated-experiment", {"activation": "identity"}),
    ("correlated-experiment", {"sigma": 1.0}),
    ("subset-every-batch", {"subset_every": 2}),
    ("staged", {"freeze_at": (5, 13, None)}),
    ("adam-baseline", {"optimizer": "rmsprop"}),
    ("gaussian-identity-ac", {"rule": "ac-offpolicy"}),
    ("partition-dsd", {"activation": "identity"}),
]


@pytest.mark.parametrize(("name", "change"), ONE_DETAIL,
                         ids=[f"{n}-{'-'.join(map(str, c.values()))}" for n, c in ONE_DETAIL])
def test_the_comparison_sees_a_change_of_one_detail(name, change):
    case = next(case for case in CASES if case.name == name)
    got, want, *_ = train_both(case, replace(case, **change))
    assert max(deviation(got[k], want[k]) for k in want if k in got) > 1e-3


@pytest.mark.parametrize("n_layers", [1, 2, 3, 4, 5])
def test_staged_schedule_is_the_papers(n_layers):
    """§2.4: layer k acts greedily in 0-indexed epoch e exactly when e > floor((k+1) E / L)."""
    for epochs in range(1, 60):
        schedule = package.staged_schedule(epochs, n_layers)
        for k, first in enumerate(schedule):
            for e in range(epochs):
                assert (first is not None and e >= first) == (e > (k + 1) * epochs // n_layers)
