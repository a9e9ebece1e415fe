"""Variance-reduction baselines: what a layer subtracts from its return before the score step.

* :class:`NoBaseline` — plain REINFORCE, ``G = r`` (`paper_method.md` §3.1).
* :class:`EmaBaseline` — the global EMA of the batch-mean reward with the paper's exact schedule
  (§3.2). Every layer keeps its own copy; fed the same broadcast rewards, the copies are identical.
* :class:`StateBaseline` — a zero-initialised linear ``V(s)`` regressed to ``r`` by one optimizer
  step on the batch-mean squared error after each use: on a layer's own input (§3.5) or, owned by
  :class:`~async_coagents.core.input_baseline.InputBaselineAgent`, on the network input (§3.4).

Protocol: ``advantage(r, s)`` gives ``G`` with the pre-update baseline; ``learn(r, s)`` updates the
baseline and is called after the layer's policy step. With ``replicas`` R every baseline holds one
value (or one ``V``) per replica and takes ``r (R, B)``, ``s (R, B, n)``.
"""

from __future__ import annotations

import numpy as np

from async_coagents.core.mlp import MLP
from async_coagents.core.optim import Optimizer
from async_coagents.core.replicas import leading
from async_coagents.errors import CheckpointError, ConfigError


class NoBaseline:
    """``G = r`` (§3.1)."""

    name = "none"

    def advantage(self, r: np.ndarray, s: np.ndarray) -> np.ndarray:
        return r

    def learn(self, r: np.ndarray, s: np.ndarray) -> None:
        return None

    def state_dict(self) -> dict:
        return {"name": self.name}

    def load_state_dict(self, state: dict) -> None:
        _check_name(state, self.name)


class EmaBaseline:
    """``G = r - b``; ``b`` is an EMA of the batch-mean reward, updated after the step (§3.2).

    On the very first batch nothing is subtracted. After that batch's step ``b`` is initialised to
    its mean reward and then immediately updated once (so it still equals that mean). From then on
    ``b <- decay * b + (1 - decay) * mean(r)`` after every step. ``frozen`` stops the updates (the
    paper's ``update_baseline = false``).
    """

    name = "ema"

    def __init__(self, decay: float = 0.99, frozen: bool = False,
                 replicas: int | None = None) -> None:
        if not (isinstance(decay, int | float) and 0.0 <= decay < 1.0):
            raise ConfigError(f"baseline_decay must be in [0, 1), got {decay!r}")
        self.decay = float(decay)
        self.frozen = frozen
        self.replicas = replicas
        self.value: float | np.ndarray | None = None  # (R,) float64 with replicas

    def advantage(self, r: np.ndarray, s: np.ndarray) -> np.ndarray:
        if self.value is None:
            return r
        if self.replicas is not None:
            return r - self.value.astype(r.dtype)[:, None]
        return r - r.dtype.type(self.value)

    def learn(self, r: np.ndarray, s: np.ndarray) -> None:
        if self.frozen:
            return
        if self.replicas is not None:  # each replica's float64 mean of its float32 sum
            mean = r.sum(axis=-1).astype(np.float64) / r.shape[-1]
        else:
            mean = float(r.sum()) / r.size  # r.mean() costs 3x more on a 32-vector
        if self.value is None:
            self.value = mean
        self.value = self.decay * self.value + (1.0 - self.decay) * mean

    def state_dict(self) -> dict:
        return {"name": self.name, "decay": self.decay, "frozen": self.frozen,
                "value": self.value}

    def load_state_dict(self, state: dict) -> None:
        _check_name(state, self.name)
        self.decay, self.frozen = float(state["decay"]), bool(state["frozen"])
        value = state["value"]
        if value is None:
            self.value = None
        elif self.replicas is not None:
            self.value = np.broadcast_to(np.asarray(value, np.float64), (self.replicas,)).copy()
        else:
            self.value = float(value)


class StateBaseline:
    """Linear ``V(s) = s v + v_0``, zero-initialised, with its own optimizer (§3.4, §3.5)."""

    name = "state"

    def __init__(self, n_inputs: int, optimizer: Optimizer, dtype: np.dtype | str,
                 replicas: int | None = None) -> None:
        self.value_fn = MLP([n_inputs, 1], "identity", dtype=dtype, zero_init=True,
                            replicas=replicas)
        self.optimizer = optimizer

    @staticmethod
    def shape(n_inputs: int, replicas: int | None) -> tuple[int, ...]:
        """The parameter shape its optimizer steps: ``(n_inputs + 1,)``, per replica."""
        return (*leading(replicas), n_inputs + 1)

    def values(self, s: np.ndarray) -> np.ndarray:
        """``V(s)``, ``(B,)``."""
        return self.value_fn(s)[..., 0]

    def advantage(self, r: np.ndarray, s: np.ndarray) -> np.ndarray:
        return r - self.values(s)

    def learn(self, r: np.ndarray, s: np.ndarray) -> None:
        """One optimizer step on ``mean_b (V(s_b) - r_b)^2``."""
        v, cache = self.value_fn.forward(s)
        self.value_fn.backward(cache, (2.0 / r.shape[-1]) * (v - r[..., None]))
        self.optimizer.step(self.value_fn.params, self.value_fn.grad)

    def state_dict(self) -> dict:
        return {"name": self.name, "params": self.value_fn.params.copy(),
                "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        _check_name(state, self.name)
        self.value_fn.load_params(state["params"], "state baseline")
        self.optimizer.load_state_dict(state["optimizer"])


def _check_name(state: dict, name: str) -> None:
    if state.get("name") != name:
        raise CheckpointError(f"baseline state is for {state.get('name')!r}, expected {name!r}")

