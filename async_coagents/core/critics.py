"""Per-layer action-value critics ``Q_i(s_i, a_i)`` (`paper_method.md` §3.6, §3.7).

A critic is an MLP on the concatenation ``[s_i ; phi(a_i)]`` (for Bernoulli units ``phi(a) = a``,
exactly the paper's input) with ``hidden_layers`` ReLU layers of ``hidden_units`` and a scalar
output, torch's default initialisation, and its own optimizer (learning rate
``critic_lr_ratio * lr``, 2 in every experiment of the paper).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from async_coagents.core.mlp import MLP
from async_coagents.core.optim import Optimizer


class ActionValueCritic:
    """``Q(s, h)`` regressed to a target by one step on ``mean_b (Q(s_b, h_b) - y_b)^2``."""

    def __init__(self, n_state: int, n_action: int, hidden_layers: int, hidden_units: int,
                 make_optimizer: Callable[[int], Optimizer], *, rng: np.random.Generator,
                 dtype: np.dtype | str) -> None:
        sizes = [n_state + n_action, *([hidden_units] * hidden_layers), 1]
        self.net = MLP(sizes, "relu", rng=rng, dtype=dtype)
        self.optimizer = make_optimizer(self.net.params.shape)

    def _input(self, s: np.ndarray, h: np.ndarray) -> np.ndarray:
        return np.concatenate([s, h.astype(s.dtype, copy=False)], axis=-1)

    def value(self, s: np.ndarray, h: np.ndarray) -> np.ndarray:
        """``Q(s_b, h_b)`` for every example, ``(B,)``."""
        return self.net(self._input(s, h))[..., 0]

    def learn(self, s: np.ndarray, h: np.ndarray, target: np.ndarray) -> None:
        """One optimizer step toward ``target (B,)``, held constant (§3.6 "critic update")."""
        q, cache = self.net.forward(self._input(s, h))
        self.net.backward(cache, (2.0 / target.shape[-1]) * (q - target[..., None]))
        self.optimizer.step(self.net.params, self.net.grad)

    def state_dict(self) -> dict:
        return {"params": self.net.params.copy(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_params(state["params"], "critic")
        self.optimizer.load_state_dict(state["optimizer"])
