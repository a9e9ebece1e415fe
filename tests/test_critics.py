"""Critic rules on hand-made cases (paper_method.md §3.6, §3.7, §3.9): what each layer learns its
critic toward, the scalar it hands to the layer below, and what that layer's actor uses."""

import numpy as np
import pytest

from async_coagents.core.network import NetworkSpec, build_network

LR = 0.5


def build(rule, **overrides):
    settings = dict(n_inputs=4, n_outputs=3, hidden=(6, 5), units="bernoulli", rule=rule,
                    optimizer="sgd", lr=LR, critic_layers=0, critic_lr_ratio=2.0, dtype="float64")
    spec = NetworkSpec(**{**settings, **overrides})
    return build_network(spec, seed=3)


def linear_critic_value(params, s, h):
    w, c = params[:-1], params[-1]
    return np.concatenate([s, h], axis=1) @ w + c


def linear_critic_step(params, s, h, target, lr):
    q = linear_critic_value(params, s, h)
    d = 2.0 * (q - target) / len(target)
    inp = np.concatenate([s, h], axis=1)
    return params - lr * np.concatenate([inp.T @ d, [d.sum()]])


def forward(net, sid, x):
    h = x
    for layer in net.layers:
        h = layer.forward(sid, h)
    return h


def test_routing_critics_on_every_layer_but_the_first():
    net = build("ac")
    l0, l1, _out = net.layers
    assert l0.critic is None and l1.critic is not None
    assert l0.listens_to_feedback and not l1.listens_to_feedback
    assert l1.sends_feedback and not l0.sends_feedback
    assert not l0.needs_reward  # an ac lower layer learns only from the feedback (§3.6)


@pytest.mark.parametrize("rule", ["ac", "ac-offpolicy"])
def test_feedback_is_the_updated_critic_at_the_sampled_or_greedy_next_action(rule):
    net = build(rule)
    l0, l1, _ = net.layers
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4))
    forward(net, 0, x)
    e1 = l1._pending[0]
    s1, a1 = e1.x.copy(), e1.out.copy()  # s1 is layer 0's *sampled* action
    r = rng.normal(size=64)
    critic_before = l1.critic.net.params.copy()

    feedback = l1.reward(0, r)

    critic_after = linear_critic_step(critic_before, s1, a1, r, 2 * LR)  # top critic target: r
    np.testing.assert_allclose(l1.critic.net.params, critic_after)
    if rule == "ac":  # y_0 = Q_1(a_0, a_1): the action layer 1 actually sampled (§3.6)
        expected = linear_critic_value(critic_after, s1, a1)
    else:  # y_0 = Q_1(a_0, greedy_1(a_0)): per-unit argmax at the sampled input (§3.7)
        greedy = e1.dist.argmax(axis=2).astype(float)
        assert (greedy != a1).any(), "the case must tell sampled from greedy"
        expected = linear_critic_value(critic_after, s1, greedy)
    np.testing.assert_allclose(feedback, expected)

    # and the layer below uses that scalar as its return, with no baseline (§3.6 actor)
    e0 = l0._pending[0]
    before = l0.policy.params.copy()
    l0.feedback(0, feedback)
    score = l0.unit.score_grad(e0.dist, e0.action)
    dz = -(feedback / 64)[:, None] * score
    np.testing.assert_allclose(before - l0.policy.params,
                               LR * np.concatenate([(e0.x.T @ dz).ravel(), dz.sum(0)]))


def test_off_policy_target_uses_the_sampled_input_not_the_greedy_path():
    net = build("ac-offpolicy")
    l0, l1, _ = net.layers
    x = np.random.default_rng(1).normal(size=(64, 4))
    forward(net, 0, x)
    s1_sampled = l1._pending[0].x.copy()
    s1_greedy = l0.act(x)
    assert (s1_sampled != s1_greedy).any()
    feedback = l1.reward(0, np.zeros(64))
    q = l1.critic.value
    np.testing.assert_allclose(feedback, q(s1_sampled, l1.act(s1_sampled)))
    assert not np.allclose(feedback, q(s1_greedy, l1.act(s1_greedy)))


def test_ac_mc_reconstruction_regresses_every_critic_to_the_reward():
    net = build("ac-mc", hidden=(6, 5, 4))
    _l0, l1, l2, _ = net.layers
    assert l1.needs_reward and l1.listens_to_feedback
    x = np.random.default_rng(2).normal(size=(32, 4))
    forward(net, 0, x)
    r = np.random.default_rng(3).normal(size=32)
    e1 = l1._pending[0]
    s1, a1 = e1.x.copy(), e1.out.copy()
    before = l1.critic.net.params.copy()
    fb2 = l2.reward(0, r)
    assert l1.reward(0, r) is None  # waits for the feedback from layer 2
    fb1 = l1.feedback(0, fb2)
    after = linear_critic_step(before, s1, a1, r, 2 * LR)  # target r, not fb2
    np.testing.assert_allclose(l1.critic.net.params, after)
    np.testing.assert_allclose(fb1, linear_critic_value(after, s1, a1))


def test_reinforce_phase_then_critic_signal():
    net = build("ac-reinforce", reinforce_updates=1)
    l0, l1, _ = net.layers
    rng = np.random.default_rng(4)
    grads = []
    for sid in range(2):
        x = rng.normal(size=(16, 4))
        forward(net, sid, x)
        r = rng.normal(size=16)
        e0 = l0._pending[sid]
        before = l0.policy.params.copy()
        feedback = l1.reward(sid, r)
        l0.reward(sid, r)
        l0.feedback(sid, feedback)
        signal = r if sid == 0 else feedback
        dz = -(signal / 16)[:, None] * l0.unit.score_grad(e0.dist, e0.action)
        grads.append(np.allclose(before - l0.policy.params,
                                 LR * np.concatenate([(e0.x.T @ dz).ravel(), dz.sum(0)])))
    assert grads == [True, True]


def test_advantage_centred_critic_subtracts_the_layers_own_greedy_value_before_its_step():
    """ac-offpolicy-advantage (our extension): G_i = y_i - Q_i(s_i, greedy_i(s_i)) with Q_i read
    before its step on the batch; the critic's step and the message below are ac-offpolicy's;
    layer 0 keeps a critic as its baseline and sends nothing."""
    net = build("ac-offpolicy-advantage")
    l0, l1, _ = net.layers
    assert l0.critic is not None and l1.critic is not None
    assert l1.sends_feedback and not l0.sends_feedback and l0.listens_to_feedback
    rng = np.random.default_rng(5)
    for sid in range(3):  # later batches: the critics have moved off their initialisation
        x = rng.normal(size=(64, 4))
        forward(net, sid, x)
        e0, e1 = l0._pending[sid], l1._pending[sid]
        s1, a1, s0, a0 = e1.x.copy(), e1.out.copy(), e0.x.copy(), e0.out.copy()
        greedy1, greedy0 = (e.dist.argmax(axis=2).astype(float) for e in (e1, e0))
        c1, c0 = l1.critic.net.params.copy(), l0.critic.net.params.copy()
        p1, p0 = l1.policy.params.copy(), l0.policy.params.copy()
        r = rng.normal(size=64)
        feedback = l1.reward(sid, r)
        c1_after = linear_critic_step(c1, s1, a1, r, 2 * LR)  # Q_1 -> r, as ac-offpolicy
        np.testing.assert_allclose(l1.critic.net.params, c1_after)
        np.testing.assert_allclose(feedback, linear_critic_value(c1_after, s1, greedy1))
        g1 = r - linear_critic_value(c1, s1, greedy1)  # the critic before its step
        dz = -(g1 / 64)[:, None] * l1.unit.score_grad(e1.dist, e1.action)
        np.testing.assert_allclose(p1 - l1.policy.params,
                                   LR * np.concatenate([(s1.T @ dz).ravel(), dz.sum(0)]))
        l0.feedback(sid, feedback)
        np.testing.assert_allclose(l0.critic.net.params,
                                   linear_critic_step(c0, s0, a0, feedback, 2 * LR))
        g0 = feedback - linear_critic_value(c0, s0, greedy0)
        dz = -(g0 / 64)[:, None] * l0.unit.score_grad(e0.dist, e0.action)
        np.testing.assert_allclose(p0 - l0.policy.params,
                                   LR * np.concatenate([(s0.T @ dz).ravel(), dz.sum(0)]))


def test_dropped_feedback_drops_the_batch_below():
    net = build("ac")
    l0 = net.layers[0]
    forward(net, 0, np.ones((2, 4)))
    assert l0.feedback(0, None) is None
    assert l0.stats.dropped == 1 and l0.pending == 0


def test_critic_step_is_the_gradient_of_its_squared_error_by_finite_differences():
    from async_coagents.core.critics import ActionValueCritic
    from async_coagents.core.optim import make_optimizer
    from tests.gradcheck import assert_grad_close, numeric_grad

    critic = ActionValueCritic(4, 3, 2, 5, lambda n: make_optimizer("sgd", n, 1.0, np.float64),
                               rng=np.random.default_rng(0), dtype=np.float64)
    rng = np.random.default_rng(1)
    s, h, y = rng.normal(size=(6, 4)), rng.integers(0, 2, (6, 3)).astype(float), rng.normal(size=6)
    before = critic.net.params.copy()
    expected = numeric_grad(lambda: float(np.mean((critic.value(s, h) - y) ** 2)), critic.net.params)
    critic.learn(s, h, y)
    assert_grad_close(before - critic.net.params, expected)
