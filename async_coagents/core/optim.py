"""Optimizers SGD, RMSprop and Adam with the exact formulas of torch 1.4-1.7 (`paper_method.md` §6.1).

Each optimizer steps one flat parameter vector in place (see :class:`~async_coagents.core.mlp.MLP`),
or the ``(R, P)`` vectors of R replicas at once: every formula is element-wise, so one call on the
whole replica axis is R separate steps. ``step(params, grad, where)`` with a ``(R,)`` mask steps
only the replicas that updated (a layer whose replica fired on no stream of the batch takes no
update, ``core/firing.py``): their weights, moments and step count move, the others' do not. The
step count is then one per replica (an ``(R,)`` array, which :func:`~async_coagents.core.replicas.
slice_state` slices into each separate run's count); while every replica has stepped alike it stays
one shared number.
The paper uses one optimizer over the whole network; because all three are element-wise, one
optimizer per layer with the same hyperparameters is the same thing, which is what lets every
layer be an independent agent.
"""

from __future__ import annotations

import math

import numpy as np

from async_coagents.core.arrays import owned
from async_coagents.errors import CheckpointError, ConfigError


class Optimizer:
    """Base class: ``step(params, grad)`` updates ``params`` in place from ``grad``."""

    name = "optimizer"

    def __init__(self, size: int | tuple[int, ...], lr: float, dtype: np.dtype | str) -> None:
        if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
            raise ConfigError(f"learning rate must be a finite number > 0, got {lr!r}")
        self.lr = float(lr)
        self.steps = 0
        self._tmp = np.zeros(size, dtype=dtype)

    def step(self, params: np.ndarray, grad: np.ndarray, where: np.ndarray | None = None) -> None:
        """One step of ``params`` in place from ``grad``; with replicas, ``where`` ``(R,)`` names
        the replicas that step (None: all of them)."""
        if where is None and np.ndim(self.steps) == 0:
            self.steps += 1
            self._update(params, grad, self._arrays(), self._tmp, self.steps)
            return
        rows = np.flatnonzero(np.ones(len(params), bool) if where is None else where)
        if rows.size == 0:
            return
        steps = np.array(np.broadcast_to(self.steps, (len(params),)), dtype=np.int64)
        steps[rows] += 1
        self.steps = steps
        arrays = self._arrays()
        part = {key: array[rows] for key, array in arrays.items()}  # copies of the stepping rows
        sub = params[rows]
        self._update(sub, grad[rows], part, np.empty_like(sub), steps[rows])
        params[rows] = sub
        for key, array in arrays.items():
            array[rows] = part[key]

    def _update(self, params: np.ndarray, grad: np.ndarray, arrays: dict[str, np.ndarray],
                tmp: np.ndarray, t: int | np.ndarray) -> None:
        """The formula on ``params`` and the moments ``arrays`` in place; ``t`` is the step count
        after this step, one number or one per row."""
        raise NotImplementedError

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(owned(state))  # moments are updated in place

    def hyper(self) -> dict[str, float]:
        """The hyperparameters besides the learning rate."""
        return {}

    def fresh(self, size: int | tuple[int, ...]) -> Optimizer:
        """A new optimizer of the same kind and hyperparameters for ``size`` parameters."""
        return type(self)(size, self.lr, self._tmp.dtype, **self.hyper())

    def _arrays(self) -> dict[str, np.ndarray]:
        return {}

    def state_dict(self) -> dict:
        """Everything needed to continue bit-exactly: hyperparameters, step count, moments."""
        steps = self.steps.copy() if isinstance(self.steps, np.ndarray) else self.steps
        return {"name": self.name, "lr": self.lr, "steps": steps,
                **{k: v.copy() for k, v in self._arrays().items()}}

    def load_state_dict(self, state: dict) -> None:
        if state.get("name") != self.name:
            raise CheckpointError(
                f"optimizer state is for {state.get('name')!r}, this optimizer is {self.name!r}"
            )
        self.lr = float(state["lr"])
        steps = np.asarray(state["steps"])
        self.steps = int(steps) if steps.ndim == 0 else steps.astype(np.int64)  # one per replica
        for key, array in self._arrays().items():
            saved = np.asarray(state[key])
            if saved.shape != array.shape or saved.dtype != array.dtype:
                raise CheckpointError(
                    f"optimizer {key!r} is a {saved.dtype} array of shape {saved.shape}, "
                    f"expected {array.dtype} {array.shape}"
                )
            array[...] = saved


class SGD(Optimizer):
    """``theta <- theta - lr * g`` (§6.1; used after backprop pre-training with lr/128, §5.4)."""

    name = "sgd"

    def _update(self, params, grad, arrays, tmp, t) -> None:
        np.multiply(grad, self.lr, out=tmp)
        params -= tmp


class RMSprop(Optimizer):
    """``v <- beta v + (1-beta) g^2``; ``theta <- theta - lr g / (sqrt(v) + eps)`` (§6.1).

    torch's defaults: ``beta`` (torch's ``alpha``) 0.99, ``eps`` 1e-8, ``v_0 = 0``, no momentum,
    not centred.
    """

    name = "rmsprop"

    def __init__(self, size: int, lr: float, dtype: np.dtype | str, *, beta: float = 0.99,
                 eps: float = 1e-8) -> None:
        super().__init__(size, lr, dtype)
        _check_unit_interval("rmsprop beta", beta)
        self.beta, self.eps = float(beta), float(eps)
        self.v = np.zeros(size, dtype=dtype)

    def hyper(self) -> dict[str, float]:
        return {"beta": self.beta, "eps": self.eps}

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"v": self.v}

    def _update(self, params, grad, arrays, tmp, t) -> None:
        v = arrays["v"]
        v *= self.beta
        np.multiply(grad, grad, out=tmp)
        tmp *= 1.0 - self.beta
        v += tmp
        np.sqrt(v, out=tmp)
        tmp += self.eps
        np.divide(grad, tmp, out=tmp)
        tmp *= self.lr
        params -= tmp


class Adam(Optimizer):
    """Adam with torch's bias-correction form (§6.1)::

        m <- b1 m + (1-b1) g ;  v <- b2 v + (1-b2) g^2
        theta <- theta - lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
    """

    name = "adam"

    def __init__(self, size: int, lr: float, dtype: np.dtype | str, *, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8) -> None:
        super().__init__(size, lr, dtype)
        _check_unit_interval("adam beta1", beta1)
        _check_unit_interval("adam beta2", beta2)
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)
        self.m = np.zeros(size, dtype=dtype)
        self.v = np.zeros(size, dtype=dtype)

    def hyper(self) -> dict[str, float]:
        return {"beta1": self.beta1, "beta2": self.beta2, "eps": self.eps}

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"m": self.m, "v": self.v}

    def _update(self, params, grad, arrays, tmp, t) -> None:
        m, v = arrays["m"], arrays["v"]
        m *= self.beta1
        m += (1.0 - self.beta1) * grad
        v *= self.beta2
        np.multiply(grad, grad, out=tmp)
        tmp *= 1.0 - self.beta2
        v += tmp
        step_size, correction = self._corrections(t, params)
        np.sqrt(v, out=tmp)
        tmp /= correction
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= step_size
        params -= tmp

    def _corrections(self, t: int | np.ndarray, params: np.ndarray):
        """``lr / (1 - b1^t)`` and ``sqrt(1 - b2^t)``: numbers, or one per row ``(n, 1, ...)``
        each the number a separate run computes for its own ``t``, rounded to the parameters'
        dtype as that run's Python float is."""
        if np.ndim(t) == 0:
            return self.lr / (1.0 - self.beta1 ** t), math.sqrt(1.0 - self.beta2 ** t)
        shape = (-1, *[1] * (params.ndim - 1))
        counts = [int(k) for k in t]
        return (np.array([self.lr / (1.0 - self.beta1 ** k) for k in counts],
                         dtype=params.dtype).reshape(shape),
                np.array([math.sqrt(1.0 - self.beta2 ** k) for k in counts],
                         dtype=params.dtype).reshape(shape))


def _check_unit_interval(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and 0.0 <= value < 1.0):
        raise ConfigError(f"{name} must be in [0, 1), got {value!r}")


OPTIMIZERS = {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam}


def make_optimizer(name: str, size: int | tuple[int, ...], lr: float, dtype: np.dtype | str = np.float64,
                   **hyper: float) -> Optimizer:
    """Build an optimizer by name (``sgd``, ``rmsprop``, ``adam``) for a flat vector of ``size``.

    ``hyper`` takes ``beta`` (RMSprop) or ``beta1``/``beta2`` (Adam) and ``eps``; keys that do not
    apply to the chosen optimizer are an error, so a misspelt setting is never silently ignored.
    """
    try:
        cls = OPTIMIZERS[name]
    except KeyError:
        raise ConfigError(
            f"optimizer must be one of {sorted(OPTIMIZERS)}, got {name!r}"
        ) from None
    try:
        return cls(size, lr, dtype, **hyper)
    except TypeError as exc:
        raise ConfigError(f"optimizer {name!r}: {exc}") from None
