"""The agent-based synchronous trainer against an independent, monolithic re-implementation of
the paper's training step (paper_method.md §3.1, §3.2, §3.6, §3.7 and the §10 reference order):
sample every layer, reward, critics updated top-down (each target from the already-updated critic
above and the pre-update policy), every actor gradient with pre-update policies, one RMSprop step
each, EMA baseline last. Written in one function, as the paper's agent files are; it shares
nothing with the package but the convention for drawing the sampling uniforms."""

import numpy as np
import pytest

from async_coagents.core import seeding
from async_coagents.core.network import NetworkSpec, build_network
from async_coagents.core.trainer import train_step

SEED, LR, B = 11, 0.01, 16
HIDDEN = (7, 6, 5)


class Monolith:
    def __init__(self, net, rule):
        self.rule = rule
        self.W = [layer.policy.weights[0].copy() for layer in net.layers[:-1]]
        self.b = [layer.policy.biases[0].copy() for layer in net.layers[:-1]]
        self.Wo = net.output.net.weights[0].copy()
        self.bo = net.output.net.biases[0].copy()
        self.critics = {
            i: [a.copy() for pair in zip(layer.critic.net.weights, layer.critic.net.biases,
                                         strict=True) for a in pair]
            for i, layer in enumerate(net.layers[:-1]) if layer.critic is not None
        }
        self.rngs = [seeding.generator(SEED, "sampling", i) for i in range(len(HIDDEN))]
        self.v = {}  # RMSprop second moments, keyed by parameter name
        self.baseline = None

    def rmsprop(self, key, theta, grad, lr):
        v = self.v.setdefault(key, np.zeros_like(theta))
        v *= 0.99
        v += 0.01 * grad * grad
        theta -= lr * grad / (np.sqrt(v) + 1e-8)

    @staticmethod
    def q(params, inp):
        w1, c1, w2, c2 = params
        return (np.maximum(inp @ w1 + c1, 0) @ w2 + c2)[:, 0]

    def critic_step(self, i, inp, target):
        w1, c1, w2, c2 = self.critics[i]
        z = inp @ w1 + c1
        hid = np.maximum(z, 0)
        d = (2.0 / len(target)) * ((hid @ w2 + c2)[:, 0] - target)[:, None]
        dz = (d @ w2.T) * (z > 0)
        grads = [inp.T @ dz, dz.sum(0), hid.T @ d, d.sum(0)]
        for k, (theta, g) in enumerate(zip(self.critics[i], grads, strict=True)):
            self.rmsprop(("critic", i, k), theta, g, 2 * LR)

    def step(self, x, y):
        L = len(HIDDEN)
        s, probs, acts = [x], [], []
        for i in range(L):
            z = (s[i] @ self.W[i] + self.b[i]).reshape(len(x), -1, 2)
            p = np.exp(z - z.max(2, keepdims=True))
            p /= p.sum(2, keepdims=True)
            u = self.rngs[i].random(p.shape[:2])
            a = (u >= p[:, :, 0]).astype(np.intp)
            probs.append(p)
            acts.append(a)
            s.append(a.astype(float))
        o = s[L] @ self.Wo + self.bo
        zo = o - o.max(1, keepdims=True)
        logp = zo - np.log(np.exp(zo).sum(1, keepdims=True))
        r = logp[np.arange(len(y)), y]
        # critics, top-down (§3.6, §3.7)
        signal = {L - 1: r}
        for i in range(L - 1, 0, -1) if self.critics else ():
            self.critic_step(i, np.concatenate([s[i], s[i + 1]], 1), signal[i])
            nxt = s[i + 1] if self.rule == "ac" else probs[i].argmax(2).astype(float)
            signal[i - 1] = self.q(self.critics[i], np.concatenate([s[i], nxt], 1))
        # actor gradients with the pre-update policies, then one step each
        grads = []
        for i in range(L):
            if self.rule in ("ac", "ac-offpolicy"):
                g = signal[i]
            elif self.rule == "baseline" and self.baseline is not None:
                g = r - self.baseline
            else:
                g = r
            p, a = probs[i], acts[i]
            pa = np.take_along_axis(p, a[:, :, None], 2)
            score = -p.copy()
            np.put_along_axis(score, a[:, :, None], 1 - pa, 2)
            score *= pa / (pa + 1e-5)
            dz = (-(g / len(x))[:, None] * score.reshape(len(x), -1))
            grads.append((s[i].T @ dz, dz.sum(0)))
        d_o = np.exp(logp)
        d_o[np.arange(len(y)), y] -= 1
        d_o /= len(y)
        out_grads = (s[L].T @ d_o, d_o.sum(0))
        for i, (gw, gb) in enumerate(grads):
            self.rmsprop(("W", i), self.W[i], gw, LR)
            self.rmsprop(("b", i), self.b[i], gb, LR)
        self.rmsprop("Wo", self.Wo, out_grads[0], LR)
        self.rmsprop("bo", self.bo, out_grads[1], LR)
        if self.rule == "baseline":  # after the step (§3.2)
            if self.baseline is None:
                self.baseline = r.mean()
            self.baseline = 0.99 * self.baseline + 0.01 * r.mean()
        return -r.mean()


@pytest.mark.parametrize("rule", ["reinforce", "baseline", "ac", "ac-offpolicy"])
def test_agent_trainer_matches_the_monolithic_reference(rule):
    spec = NetworkSpec(n_inputs=8, n_outputs=4, hidden=HIDDEN, units="bernoulli", rule=rule,
                       optimizer="rmsprop", lr=LR, critic_layers=1, critic_units=16,
                       dtype="float64")
    net = build_network(spec, SEED)
    ref = Monolith(net, rule)
    data = np.random.default_rng(0)
    for sid in range(30):
        x = data.normal(size=(B, 8))
        y = data.integers(0, 4, B)
        loss_ref = ref.step(x, y)
        loss = train_step(net, sid, x, y)
        assert loss == pytest.approx(loss_ref, rel=1e-10)
    for i, layer in enumerate(net.layers[:-1]):
        np.testing.assert_allclose(layer.policy.weights[0], ref.W[i], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(layer.policy.biases[0], ref.b[i], rtol=1e-9, atol=1e-12)
        if layer.critic is not None:
            np.testing.assert_allclose(layer.critic.net.weights[0], ref.critics[i][0], rtol=1e-9,
                                       atol=1e-12)
    np.testing.assert_allclose(net.output.net.weights[0], ref.Wo, rtol=1e-9, atol=1e-12)
    # the run really moved the weights (the comparison is not between two untouched copies)
    assert net.layers[0].version == 30
