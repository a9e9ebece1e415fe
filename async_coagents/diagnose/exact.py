"""The exact expected reward of a small discrete coagent network and its gradient, by enumeration,
and the fixed point where the instrument measures.

``E[R] = mean_x sum_{a_0..a_L} prod_l pi_l(a_l | s_l) R(x, a_L)``. The layers form a Markov chain
(``s_{l+1} = phi(a_l)``), so ``E[R]`` and its gradient for each layer (``sum P R grad log pi_l``,
with the exact ``log pi``) are computed with forward and backward messages over each layer's joint
actions, vectorised with numpy: no loop over the joint actions of the network.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

import numpy as np

from async_coagents.core.layers import CoagentLayer
from async_coagents.core.network import Network, NetworkSpec, build_network
from async_coagents.core.objectives import SampledClassification
from async_coagents.core.units import Categorical
from async_coagents.diagnose.task import tiny_task
from async_coagents.errors import ConfigError

#: The fixed point: exact gradient ascent (SGD, this lr, at most this many steps) from the
#: initialisation until E[R] >= TARGET (on the 1 / -1 scale: 65 % right).
TARGET = 0.3
ASCENT_LR = 2.0
ASCENT_STEPS = 5_000


def _coagent_layers(net: Network) -> list[CoagentLayer]:
    layers = net.layers
    if not all(isinstance(layer, CoagentLayer) and isinstance(layer.unit, Categorical)
               for layer in layers):
        raise ConfigError("the exact gradient needs a network of coagent layers of categorical "
                          "units (no read-out, no node groups)")
    if not isinstance(net.objective, SampledClassification):
        raise ConfigError("the exact gradient needs a categorical output coagent")
    return layers


def _joint_actions(layer: CoagentLayer) -> np.ndarray:
    """Every joint action of ``layer``'s units, ``(M, U)`` int, ``M = K^U``."""
    return np.array(list(itertools.product(range(layer.unit.n_actions), repeat=layer.n_units)),
                    dtype=np.intp).reshape(-1, layer.n_units)


class _Chain:
    """The network as a Markov chain over each layer's joint actions, at its current parameters:
    per layer its input states, the policy at each state and ``P(a_l | s_l)`` ``(S_l, M_l)``."""

    def __init__(self, net: Network, x: np.ndarray) -> None:
        self.layers = _coagent_layers(net)
        self.actions = [_joint_actions(layer) for layer in self.layers]
        self.states, self.dists, self.probs = [], [], []
        s = np.asarray(x, dtype=np.float64)
        for layer, actions in zip(self.layers, self.actions, strict=True):
            dist = layer.unit.policy(layer.policy(s.astype(layer.dtype))).astype(np.float64)
            chosen = np.take_along_axis(dist[:, None, :, :], actions[None, :, :, None], axis=3)
            self.states.append(s)
            self.dists.append(dist)  # (S, U, K)
            self.probs.append(chosen[..., 0].prod(axis=2))  # (S, M): prod_u pi_u(a_u | s)
            s = layer.unit.transition(actions, np.float64)  # the next layer's states

    def forward(self) -> list[np.ndarray]:
        """``alpha_l[n, m] = P(a_l = m | x_n)``, per layer ``(N, M_l)``."""
        alpha = [self.probs[0]]
        for probs in self.probs[1:]:
            alpha.append(alpha[-1] @ probs)
        return alpha

    def backward(self, rewards: np.ndarray) -> list[np.ndarray]:
        """``beta_l[n, m] = E[R | a_l = m, x_n]``, per layer ``(N, M_l)``; ``rewards (N, C)``."""
        beta = [rewards]
        for probs in reversed(self.probs[1:]):
            beta.append(beta[-1] @ probs.T)
        return beta[::-1]


def _rewards(net: Network, y: np.ndarray, n_classes: int) -> np.ndarray:
    """``R[n, c]``: the reward of class ``c`` for example ``n`` (1 right, ``miss_reward`` wrong)."""
    hit = np.arange(n_classes)[None, :] == np.asarray(y)[:, None]
    return np.where(hit, 1.0, net.objective.miss_reward)


def _exact(net: Network, x: np.ndarray, y: np.ndarray) -> tuple[float, list[np.ndarray]]:
    """``E[R]`` and ``grad E[R]`` per layer (see :func:`exact_gradient`)."""
    chain = _Chain(net, x)
    alpha = chain.forward()
    rewards = _rewards(net, y, chain.actions[-1].shape[0])
    beta = chain.backward(rewards)
    n = len(x)
    grads = []
    for i, layer in enumerate(chain.layers):
        probs, dist, actions = chain.probs[i], chain.dists[i], chain.actions[i]
        # W[s, a] = (1/N) sum_n rho_l(n, s) P_l(a | s) beta_l(n, a), (S, M); layer 0's states
        # are the inputs themselves
        weight = probs * (beta[0] if i == 0 else alpha[i - 1].T @ beta[i]) / n
        one_hot = np.eye(layer.unit.n_actions)[actions]  # (M, U, K)
        dz = np.einsum("sm,muk->suk", weight, one_hot) - dist * weight.sum(axis=1)[:, None, None]
        _, cache = layer.policy.forward(chain.states[i].astype(layer.dtype))
        layer.policy.backward(cache, dz.reshape(len(dz), -1).astype(layer.dtype))
        grads.append(layer.policy.grad.astype(np.float64))
    return float((alpha[-1] * rewards).sum(axis=1).mean()), grads


def expected_reward(net: Network, x: np.ndarray, y: np.ndarray) -> float:
    """``E[R] = mean_x sum_a P(a | x) R(x, a)`` of ``net`` at its parameters, by enumeration."""
    chain = _Chain(net, x)
    alpha = chain.forward()[-1]
    return float((alpha * _rewards(net, y, alpha.shape[1])).sum(axis=1).mean())


def exact_gradient(net: Network, x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """``grad E[R]`` for every layer of ``net``, each in the layout of its ``policy.params``
    (float64), computed with the exact ``log pi`` (no 1e-5):

        dE/dtheta_l = (1/N) sum_n sum_s rho_l(n, s) sum_a P_l(a | s) beta_l(n, a) grad log P_l(a | s)

    with ``rho_0(n, s) = [s = x_n]``, ``rho_l = alpha_{l-1}`` (forward messages), ``beta_l(n, a) =
    E[R | a_l = a, x_n]`` (backward messages); a softmax unit's score is ``d log pi_u(k) / dz_uj =
    [k = j] - pi_uj``. The layers' ``policy.grad`` buffers are overwritten (scratch space).
    """
    return _exact(net, x, y)[1]


# ---- the fixed point --------------------------------------------------------------------------
@dataclass(frozen=True)
class FixedPoint:
    """The task and the policy parameters at which the instrument measures (:func:`fixed_point`)."""

    x: np.ndarray
    y: np.ndarray
    params: tuple[np.ndarray, ...]  # per layer, its policy.params
    expected_reward: float
    ascent_steps: int


_POINTS: dict[tuple, FixedPoint] = {}


def fixed_point(spec: NetworkSpec, seed: int = 0, labels: str = "random",
                target: float = TARGET) -> FixedPoint:
    """The point where rules are compared: the task :func:`tiny_task` (``labels``, ``seed``) and
    the network ``spec`` initialised with ``seed``, then moved by exact gradient ascent on
    ``E[R]`` (SGD with lr :data:`ASCENT_LR` on :func:`exact_gradient`) until ``E[R] >= target``
    — a network part way through learning the task, where every layer's gradient is well above
    zero (at the initialisation it nearly vanishes). It depends on the policy settings only, not
    on the rule (cached)."""
    if isinstance(target, bool) or not isinstance(target, int | float) or not (
            math.isfinite(target) and target < 1.0):
        raise ConfigError(f"the target expected reward must be a number below 1, got {target!r}")
    key = (seed, labels, float(target), spec.n_inputs, spec.n_outputs, spec.hidden, spec.units,
           spec.n_actions, spec.normalisation, spec.miss_reward, spec.dtype)
    if key not in _POINTS:
        x, y = tiny_task(spec.n_inputs, labels, seed)
        net = build_network(replace(spec, rule="reinforce"), seed)
        steps, (reward, grads) = 0, _exact(net, x, y)
        while reward < target:
            if steps == ASCENT_STEPS:
                raise ConfigError(
                    f"exact gradient ascent from seed {seed} did not reach E[R] >= {target} in "
                    f"{ASCENT_STEPS} steps (E[R] = {reward:.3g}, labels {labels!r}); lower the "
                    "target or try another seed or labelling")
            for layer, grad in zip(net.layers, grads, strict=True):
                layer.policy.params += (ASCENT_LR * grad).astype(layer.dtype)
            steps += 1
            reward, grads = _exact(net, x, y)
        arrays = (x, y, *(layer.policy.params.copy() for layer in net.layers))
        for array in arrays:
            array.flags.writeable = False  # shared by every caller
        _POINTS[key] = FixedPoint(x, y, arrays[2:], reward, steps)
    return _POINTS[key]
