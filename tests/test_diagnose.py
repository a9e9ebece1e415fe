"""The gradient instrument (``async_coagents.diagnose``, ``coagents diagnose``): its exact
gradient against central differences of the enumerated expected reward (and that reward against a
plain loop over every joint action); the rules unbiased in theory (REINFORCE, its baselines,
HNCA) pass its test with enough samples to have power, a biased estimator that the rule check
suite accepts fails it far beyond the threshold, and so do sign-flipped estimates; every draw
starts from the same warmed state; the statistics on estimates of known mean; the command's table,
CSV and errors. The training metric (``run.record_grad_variance``) is tested in
tests/test_grad_variance.py."""

import csv
import itertools

import numpy as np
import pytest

import async_coagents.diagnose.exact as exact_module
from async_coagents import diagnose as dg
from async_coagents.cli import main
from async_coagents.core.network import build_network
from async_coagents.core.rules import RULES, Reinforce
from async_coagents.errors import ConfigError
from async_coagents.testing import check_rule

SAMPLES = 2500  # draws per test: relative noise floor about 0.2 on every layer (asserted)


class OwnActionBonus(Reinforce):
    """A deliberately biased estimator: REINFORCE whose bottom layer (built with credits_below
    False) adds each unit's own action to its return, ``G_bu = r_b + a_bu``. Its expectation is
    off by ``grad E[a_u]``, yet the rule check suite accepts it: G rises with the return, no
    baseline is held, and the step is the gradient of its surrogate."""

    name = "test-own-action-bonus"

    @classmethod
    def build(cls, settings):
        rule = cls()
        rule.bottom = not settings.credits_below
        return rule

    def signal(self, step):
        if not self.bottom:
            return step.reward
        return step.reward[:, None] + step.action  # (B, U): one return per unit


def _moved(net, seed=3, scale=1.0):
    """``net`` with every policy parameter moved at random (a point that is not special)."""
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        layer.policy.params += scale * rng.normal(size=layer.policy.params.shape)
    return net


# ---- the exact gradient -----------------------------------------------------------------------
@pytest.mark.parametrize("settings", [dict(hidden=(3, 3)), dict(hidden=(2, 2, 2)),
                                      dict(hidden=(2, 2), units="categorical", n_actions=3,
                                           normalisation="symmetric")],
                         ids=["bernoulli-3-3", "bernoulli-2-2-2", "categorical-k3"])
def test_the_exact_gradient_is_the_central_difference_of_the_enumerated_reward(settings):
    net = _moved(build_network(dg.tiny_spec("reinforce", **settings), 0))
    x, y = dg.tiny_task(4, "random", 0)
    exact = dg.exact_gradient(net, x, y)
    assert len(exact) == len(net.layers)
    for layer, grad in zip(net.layers, exact, strict=True):
        params = layer.policy.params
        assert grad.shape == params.shape
        fd = np.empty_like(grad)
        for i in range(params.size):
            old = params[i]
            params[i] = old + 1e-6
            up = dg.expected_reward(net, x, y)
            params[i] = old - 1e-6
            down = dg.expected_reward(net, x, y)
            params[i] = old
            fd[i] = (up - down) / 2e-6
        assert np.abs(grad).max() > 1e-3, layer.name  # a gradient worth checking
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-9, err_msg=layer.name)


def test_the_enumerated_reward_is_the_sum_over_every_joint_action():
    """E[R] by a plain loop over every joint action of a (2, 2) network: the product of every
    unit's probability of its action times the reward of the class."""
    net = _moved(build_network(dg.tiny_spec("reinforce", hidden=(2, 2)), 1))
    x, y = dg.tiny_task(4, "xor")
    total = 0.0
    for n in range(len(x)):
        for a0, a1, c in itertools.product(itertools.product((0, 1), repeat=2),
                                           itertools.product((0, 1), repeat=2), (0, 1)):
            p, s = 1.0, x[n:n + 1]
            for layer, action in zip(net.layers, (a0, a1, (c,)), strict=True):
                dist = layer.unit.policy(layer.policy(s))[0]
                p *= np.prod([dist[u, k] for u, k in enumerate(action)])
                s = np.array([action], dtype=float)
            total += p * (1.0 if c == y[n] else -1.0)
    assert dg.expected_reward(net, x, y) == pytest.approx(total / len(x), abs=1e-12)


def test_the_fixed_point_is_part_way_and_the_same_for_every_rule(monkeypatch):
    point = dg.fixed_point(dg.tiny_spec("reinforce"))
    assert dg.TARGET <= point.expected_reward < dg.TARGET + 0.05 and point.ascent_steps > 0
    assert dg.fixed_point(dg.tiny_spec("ac")) is point
    start = build_network(dg.tiny_spec("reinforce"), 0)
    assert dg.expected_reward(start, point.x, point.y) < 0.1  # where the ascent started
    monkeypatch.setattr(exact_module, "ASCENT_STEPS", 20)
    with pytest.raises(ConfigError, match="did not reach"):
        dg.fixed_point(dg.tiny_spec("reinforce", hidden=(1,)), target=0.99)


# ---- the draws and the unbiasedness test --------------------------------------------------------
@pytest.fixture(scope="module")
def reinforce_draws():
    return dg.draw_estimates(dg.tiny_spec("reinforce"), n=SAMPLES, warmup=0)


def _reports(drawn):
    return [dg.compare(s, g, layer=name) for name, s, g in
            zip(drawn.layers, drawn.samples, drawn.exact, strict=True)]


def test_reinforce_passes_the_unbiasedness_test_with_power(reinforce_draws):
    reports = _reports(reinforce_draws)
    assert [r.layer for r in reports] == ["layer0", "layer1", "output"]
    for r in reports:
        assert r.unbiased and abs(r.z) < 3, r
        assert r.noise_floor < 0.25 and r.cosine > 0.9, r  # the test can see a bias of ~0.3 |g|
        assert r.dof == {"layer0": 15, "layer1": 12, "output": 4}[r.layer]  # 2-logit null space


def test_sign_flipped_estimates_fail_it(reinforce_draws):
    for samples, exact in zip(reinforce_draws.samples, reinforce_draws.exact, strict=True):
        report = dg.compare(-samples, exact)
        assert not report.unbiased and report.z > 20 and report.cosine < -0.9


@pytest.mark.parametrize("rule", ["baseline", "input-baseline", "layer-baseline", "hnca",
                                  "hnca-plain"])
def test_the_other_unbiased_rules_pass_it_with_their_warmed_baselines(rule):
    reports = dg.diagnose(rule, n=SAMPLES, warmup=300)
    for r in reports:
        assert r.unbiased and abs(r.z) < 3, r
        assert r.noise_floor < 0.25, r


def test_a_biased_estimator_the_check_suite_accepts_fails_it():
    check_rule(OwnActionBonus, families=("categorical-output",), ray=False)  # accepted
    reports = {r.layer: r for r in dg.diagnose(OwnActionBonus, n=SAMPLES, warmup=0)}
    assert OwnActionBonus.name not in RULES  # registered for the measurement only
    assert not reports["layer0"].unbiased and reports["layer0"].z > 20
    assert reports["layer0"].relative_bias > 1.0
    assert reports["layer1"].unbiased and reports["output"].unbiased  # only that layer is off


def test_every_draw_starts_from_the_same_state_and_draws_anew(reinforce_draws):
    """Without warm-up the EMA baseline is unset at every draw (it is put back each time), so
    the baseline rule's draws are REINFORCE's, bit for bit; after warm-up they are not."""
    cold = dg.draw_estimates(dg.tiny_spec("baseline"), n=50, warmup=0)
    for a, b in zip(cold.samples, reinforce_draws.samples, strict=True):
        np.testing.assert_array_equal(a, b[:50])
        assert len(np.unique(a, axis=0)) > 40  # the sampling streams go on
    warm = dg.draw_estimates(dg.tiny_spec("baseline"), n=50, warmup=5)
    assert not np.array_equal(warm.samples[0], cold.samples[0])
    np.testing.assert_array_equal(warm.exact[0], cold.exact[0])  # at the same parameters


def test_the_network_must_be_enumerable():
    with pytest.raises(ConfigError, match="more than the 65536"):
        dg.tiny_spec("reinforce", hidden=(9, 8))
    with pytest.raises(ConfigError, match="categorical"):
        dg.tiny_spec("reinforce", output="readout")
    with pytest.raises(ConfigError, match="bernoulli or categorical"):
        dg.tiny_spec("reinforce", units="gaussian", output="gaussian", task="regression",
                     n_outputs=1)
    with pytest.raises(ConfigError, match="unknown learning rule"):
        dg.draw_estimates(dg.tiny_spec("reinforce"), "nope", n=10)
    with pytest.raises(ConfigError, match="samples"):
        dg.draw_estimates(dg.tiny_spec("reinforce"), n=1)


# ---- the statistics ----------------------------------------------------------------------------
def test_the_chi_square_law():
    rng = np.random.default_rng(0)
    for dof in (1, 4, 15, 60):
        draws = rng.chisquare(dof, 20_000)
        for t in np.quantile(draws, [0.5, 0.9, 0.99]):
            assert dg.chi2_sf(t, dof) == pytest.approx(np.mean(draws >= t), abs=0.01)
    assert dg.chi2_z(3.356694, 4) == pytest.approx(0.0, abs=1e-4)  # the median of chi^2(4)
    assert 0 < dg.chi2_z(1e4, 4) < dg.chi2_z(1e5, 4) < 1e3  # Wilson-Hilferty where p underflows


def test_compare_on_estimates_of_known_mean():
    rng = np.random.default_rng(1)
    g = np.array([1.0, -1.0, 0.5, 2.0])  # the first two: the opposite logits of one unit
    noise = rng.normal(size=(4000, 3))
    samples = np.column_stack([noise[:, 0], -noise[:, 0], noise[:, 1], noise[:, 2]]) + g
    fair = dg.compare(samples, g)
    assert fair.dof == 3 and fair.unbiased and fair.cosine > 0.99
    assert fair.variance == pytest.approx(4.0, rel=0.1)
    assert fair.noise_floor == pytest.approx(np.sqrt(4 / 4000) / np.linalg.norm(g), rel=0.1)
    shifted = dg.compare(samples + np.array([0.0, 0.0, 0.2, 0.0]), g)
    assert not shifted.unbiased and shifted.z > 8
    assert shifted.relative_bias == pytest.approx(0.2 / np.linalg.norm(g), abs=0.03)
    off_span = dg.compare(samples + np.array([0.01, 0.01, 0.0, 0.0]), g)  # where nothing varies
    assert off_span.t2 == np.inf and not off_span.unbiased


# ---- the command -------------------------------------------------------------------------------
def test_cli_prints_the_table_and_writes_the_csv(tmp_path, capsys):
    out = tmp_path / "rows.csv"
    assert main(["diagnose", "--rules", "reinforce", "--samples", "2000", "--csv", str(out)]) == 0
    text = capsys.readouterr().out
    assert "fixed point: E[R] = 0.3" in text and "far below the floor column" in text
    lines = {line.split()[1]: line for line in text.splitlines() if line.startswith("reinforce ")}
    assert list(lines) == ["layer0", "layer1", "output"]
    assert all(line.endswith("unbiased") for line in lines.values())
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["rule"], r["hidden"], r["layer"], r["n"]) for r in rows] == [
        ("reinforce", "3-3", name, "2000") for name in ("layer0", "layer1", "output")]
    assert float(rows[0]["cosine"]) > 0.8


def test_cli_depths_table(capsys):
    assert main(["diagnose", "--rules", "reinforce,baseline", "--hidden", "2", "--depths",
                 "1,2", "--samples", "30", "--warmup", "3"]) == 0
    text = capsys.readouterr().out
    depth = text[text.index("variance tr S per layer,"):].splitlines()
    assert depth[1].split() == ["rule", "hidden", "layer0", "layer1", "output"]
    assert [line.split()[:2] for line in depth[2:6]] == [
        ["reinforce", "[2]"], ["reinforce", "[2,"], ["baseline", "[2]"], ["baseline", "[2,"]]
    assert len(depth[2].split()) == 4 and len(depth[3].split()) == 6  # [2] has no layer1


@pytest.mark.parametrize("args, message", [
    (["--rules", "nope"], "unknown learning rule 'nope'"),
    (["--hidden", "9,8"], "more than the 65536 (16 binary units)"),
    (["--hidden", "3,x"], "--hidden must be comma-separated positive integers, got '3,x'"),
    (["--depths", "0"], "--depths must be comma-separated positive integers"),
    (["--samples", "1"], "--samples must be at least 2"),
])
def test_cli_bad_input_is_a_clear_error(args, message, capsys):
    assert main(["diagnose", *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("coagents diagnose: error:") and message in err


def test_cli_diagnose_has_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["diagnose", "--help"])
    assert exit_info.value.code == 0
    assert "--depths" in capsys.readouterr().out
