"""The instrument's task and network: every pattern of a few binary inputs in one batch, and a
network of discrete coagents with a categorical output small enough to enumerate.

The task (:func:`tiny_task`): ``n_inputs`` binary inputs of value +/-1, all ``2^n_inputs``
patterns, labelled by a balanced random labelling drawn from the seed (``labels="random"``, the
default) or by the parity of the first two bits (``labels="xor"``). The network (:func:`tiny_spec`,
:data:`TINY`): hidden layers of Bernoulli units (3, 3 by default), a categorical output coagent
over 2 classes rewarded 1 for the right class and ``miss_reward`` (-1) otherwise, float64.
"""

from __future__ import annotations

import itertools

import numpy as np

from async_coagents.core.network import NetworkSpec
from async_coagents.core.seeding import generator
from async_coagents.errors import ConfigError

#: The most joint actions of the hidden layers the enumeration accepts (16 binary units).
MAX_JOINT_ACTIONS = 2 ** 16
#: The most binary inputs (all 2^n patterns form the batch).
MAX_INPUTS = 10
#: The network of the instrument; every setting can be overridden (``tiny_spec(**settings)``).
TINY = dict(n_inputs=4, n_outputs=2, hidden=(3, 3), units="bernoulli", output="categorical",
            miss_reward=-1.0, dtype="float64", lr=0.01, critic_units=64)
LABELS = ("random", "xor")


def tiny_task(n_inputs: int = 4, labels: str = "random", seed: int = 0
              ) -> tuple[np.ndarray, np.ndarray]:
    """Every pattern of ``n_inputs`` bits as +/-1 inputs ``x (2^n, n)`` and its class ``(2^n,)``:
    a balanced random labelling drawn from ``seed`` (``"random"``: half the patterns, chosen at
    random, are class 1) or the parity of the first two bits (``"xor"``).

    >>> x, y = tiny_task(2, "xor")
    >>> x.tolist(), y.tolist()
    ([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]], [0, 1, 1, 0])
    >>> int(tiny_task(4)[1].sum())
    8
    """
    if not isinstance(n_inputs, int) or isinstance(n_inputs, bool) or not (
            2 <= n_inputs <= MAX_INPUTS):
        raise ConfigError(f"the tiny task takes 2 to {MAX_INPUTS} binary inputs, got {n_inputs!r}")
    if labels not in LABELS:
        raise ConfigError(f"labels must be one of {list(LABELS)}, got {labels!r}")
    bits = np.array(list(itertools.product((0, 1), repeat=n_inputs)), dtype=np.int64)
    x = 2.0 * bits - 1.0
    if labels == "xor":
        y = bits[:, 0] ^ bits[:, 1]
    else:
        y = np.zeros(len(bits), dtype=np.int64)
        y[generator(seed, "data", 0).permutation(len(bits))[:len(bits) // 2]] = 1
    return x, y.astype(np.int64)


def tiny_spec(rule: str = "reinforce", **settings) -> NetworkSpec:
    """The instrument's network (:data:`TINY`, with ``settings`` overriding it) learning by
    ``rule``; refused if the enumeration cannot handle it (see :func:`check_enumerable`)."""
    spec = NetworkSpec(**{**TINY, "rule": rule, **settings})
    check_enumerable(spec)
    return spec


def check_enumerable(spec: NetworkSpec) -> None:
    """Raise :class:`ConfigError` unless every layer of ``spec`` is a coagent layer of categorical
    units (Bernoulli included) with a categorical output, one agent per layer stepping every
    batch, and the hidden layers have at most :data:`MAX_JOINT_ACTIONS` joint actions."""
    if spec.learner != "coagent" or spec.units not in ("bernoulli", "categorical"):
        raise ConfigError("the gradient instrument enumerates discrete actions: it needs coagent "
                          f"layers of bernoulli or categorical units, got learner {spec.learner!r} "
                          f"with {spec.units!r} units")
    if spec.resolved_output != "categorical":
        raise ConfigError("the gradient instrument needs network.output = 'categorical' (its "
                          f"reward is a function of the sampled class), got {spec.resolved_output!r}")
    if spec.units_per_agent or spec.subset is not None or spec.freeze_at is not None or (
            spec.update_every != 1):
        raise ConfigError("the gradient instrument draws one step of every whole layer per batch: "
                          "no node groups, subsets, freezing or update_every")
    if not spec.hidden:
        raise ConfigError("the gradient instrument needs at least one hidden layer")
    k = 2 if spec.units == "bernoulli" else spec.n_actions
    joint = k ** sum(spec.hidden)
    if joint > MAX_JOINT_ACTIONS:
        raise ConfigError(
            f"hidden {list(spec.hidden)} of {k}-action units has {k}^{sum(spec.hidden)} joint "
            f"actions, more than the {MAX_JOINT_ACTIONS} (16 binary units) the exact enumeration "
            "takes; use fewer or narrower hidden layers")
