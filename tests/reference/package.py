"""The only code of the reference tests that knows the package: how a :class:`Case` becomes a
network (``NetworkSpec`` + ``build_network``), how it is trained (``LocalBackend`` with one batch
in flight and no reward delay: the synchronous reference order), and where its initial and final
weights are read. When the package's internals move, this module is what changes.
"""

from __future__ import annotations

import numpy as np

from async_coagents.backends.local import LocalBackend
from async_coagents.core.network import Network, NetworkSpec, build_network, staged_freeze_epochs
from tests.reference.monolith import Case, Init


def build(case: Case) -> Network:
    """The package's network for ``case``."""
    spec = NetworkSpec(
        n_inputs=case.n_inputs, n_outputs=case.n_outputs, task=case.task, hidden=case.hidden,
        units=case.units, n_actions=case.n_actions, normalisation=case.normalisation,
        sigma=case.sigma, activation=case.activation if case.units == "gaussian" else None,
        partition=case.partition,
        output=case.output, rule=case.rule, optimizer=case.optimizer, lr=case.lr,
        critic_layers=case.critic_layers, critic_units=case.critic_units,
        reinforce_updates=case.reinforce_updates, subset=case.subset,
        subset_every=case.subset_every, freeze_at=case.freeze_at, dtype=case.dtype)
    return build_network(spec, case.seed)


def staged_schedule(epochs: int, n_layers: int) -> list[int | None]:
    """The package's staged schedule: each layer's first greedy epoch (``None``: never)."""
    return staged_freeze_epochs(epochs, n_layers)


def _affine_maps(net) -> list[list[np.ndarray]]:
    return [[w, c] for w, c in zip(net.weights, net.biases, strict=True)]


def initial_weights(network: Network) -> Init:
    """Copies of every policy's affine map and every critic's layers, before any training."""
    policy = [[[a.copy() for a in affine] for affine in _affine_maps(layer.net)]
              for layer in network.layers]
    critics = {j: [[a.copy() for a in affine] for affine in _affine_maps(layer.critic.net)]
               for j, layer in enumerate(network.layers) if getattr(layer, "critic", None)}
    return Init(policy, critics)


def train(network: Network, batches: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    """Train on ``batches`` in the synchronous order; returns every batch's loss ``-mean(r)``."""
    backend = LocalBackend(network, window=1, reward_delay=0)
    losses = {}
    for sid, (x, y) in enumerate(batches):
        losses.update((done.sid, done.loss) for done in backend.submit(sid, x, y))
    losses.update((done.sid, done.loss) for done in backend.finish())
    return [losses[sid] for sid in range(len(batches))]


def final_arrays(network: Network) -> dict[str, np.ndarray]:
    """Every learnt quantity, named as :meth:`Monolith.arrays` names it: ``W{j}.{k}``/``c{j}.{k}``
    the affine maps of agent ``j``, ``Q{j}.W{k}``/``Q{j}.c{k}`` its critic, ``V{j}`` its linear
    baseline ``[v, v_0]``, ``ema{j}`` its copy of the EMA baseline (once it has a value), ``V(x)``
    the input-state baseline."""
    out = {}
    for j, layer in enumerate(network.layers):
        for k, (w, c) in enumerate(_affine_maps(layer.net)):
            out[f"W{j}.{k}"], out[f"c{j}.{k}"] = w, c
        if getattr(layer, "critic", None):
            for k, (w, c) in enumerate(_affine_maps(layer.critic.net)):
                out[f"Q{j}.W{k}"], out[f"Q{j}.c{k}"] = w, c
        baseline = getattr(layer, "baseline", None)
        if hasattr(baseline, "value_fn"):
            out[f"V{j}"] = baseline.value_fn.params
        if hasattr(baseline, "decay") and baseline.value is not None:
            out[f"ema{j}"] = np.array(baseline.value)
    if network.input_baseline is not None:
        out["V(x)"] = network.input_baseline.baseline.value_fn.params
    return out
