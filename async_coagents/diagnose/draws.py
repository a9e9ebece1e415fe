"""Independent estimates of ``grad E[R]`` drawn from a learning rule, as the real layers compute
them, at the instrument's fixed point (:func:`draw_estimates`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np

from async_coagents.backends.local import LocalBackend
from async_coagents.core.network import Network, NetworkSpec, build_network
from async_coagents.core.optim import SGD
from async_coagents.core.rules import RULES, Rule, get_rule, register
from async_coagents.core.seeding import rng_state, set_rng_state
from async_coagents.diagnose.exact import TARGET, _coagent_layers, _exact, fixed_point
from async_coagents.diagnose.task import check_enumerable
from async_coagents.errors import ConfigError

SAMPLES = 10_000  # draws per rule of ``coagents diagnose``
WARMUP = 1_000  # batches the auxiliary learners learn before the draws


class _RecordingSGD(SGD):
    """Plain SGD that keeps the gradient of its last step: the layer's ``dJ/dtheta``, exactly as
    the rule computed it (the step itself is taken, so a rule that reports what the step changed
    sees a real change)."""

    def __init__(self, size: int, lr: float, dtype) -> None:
        super().__init__(size, lr, dtype)
        self.recorded: np.ndarray | None = None

    def step(self, params: np.ndarray, grad: np.ndarray,
             where: np.ndarray | None = None) -> None:
        self.recorded = grad.astype(np.float64)
        super().step(params, grad, where)


@contextlib.contextmanager
def rule_named(rule: str | type[Rule]) -> Iterator[str]:
    """The registry name of ``rule`` (a :class:`Rule` subclass not registered is registered for
    the duration, as :func:`async_coagents.testing.check_rule` does)."""
    if isinstance(rule, str):
        get_rule(rule)
        yield rule
        return
    temporary = rule.name not in RULES
    if temporary:
        register(rule)
    try:
        yield rule.name
    finally:
        if temporary:
            del RULES[rule.name]


@dataclass
class Estimates:
    """``n`` independent estimates of ``grad E[R]`` per layer (``samples[l]`` ``(n, P_l)``) and
    the exact gradient (``exact[l]`` ``(P_l,)``) at the same parameters."""

    rule: str
    layers: list[str]
    samples: list[np.ndarray]
    exact: list[np.ndarray]
    expected_reward: float


def draw_estimates(spec: NetworkSpec, rule: str | type[Rule] | None = None, n: int = SAMPLES,
                   seed: int = 0, *, warmup: int = WARMUP, labels: str = "random",
                   target: float = TARGET, progress: Callable[[int], None] | None = None
                   ) -> Estimates:
    """Draw ``n`` independent estimates of ``grad E[R]`` from ``rule`` (default: ``spec.rule``) on
    the network ``spec`` at its :func:`fixed_point` (``seed``, ``labels``, ``target``).

    Every draw is one batch of the whole task (every input once) through the real layers (the
    local backend, one batch in flight); each layer's step is plain SGD (its ``spec.lr_of``) whose
    gradient ``dJ/dtheta`` is recorded, and the estimate is ``-dJ/dtheta``. Rules with auxiliary
    learners (baselines, critics, the input baseline) first learn for ``warmup`` batches at the
    fixed policy (its parameters and optimizer are put back after each batch; what the rule
    learnt is kept); then every draw starts from that warmed state (parameters, baselines,
    critics, records), so the auxiliary learners are constants during the draws and the draws
    are independent: only the sampling streams go on. ``progress(k)`` is called with the draws
    done so far.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 2:
        raise ConfigError(f"samples must be an integer >= 2, got {n!r}")
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
        raise ConfigError(f"warmup must be an integer >= 0, got {warmup!r}")
    with rule_named(rule if rule is not None else spec.rule) as name:
        spec = replace(spec, rule=name)
        check_enumerable(spec)
        point = fixed_point(spec, seed, labels, target)
        x, y = point.x, point.y
        net = build_network(spec, seed)
        layers = _coagent_layers(net)
        for index, (layer, params) in enumerate(zip(layers, point.params, strict=True)):
            layer.policy.params[...] = params
            layer.set_optimizer(_RecordingSGD(layer.net.params.size, spec.lr_of(index),
                                              layer.dtype))
        reward, exact = _exact(net, x, y)
        policy = [(layer.net.params.copy(), layer.optimizer.state_dict()) for layer in layers]
        for sid in range(warmup):  # the auxiliary learners learn; the policy is put back
            _one_batch(net, sid, x, y)
            for layer, (params, optimizer) in zip(layers, policy, strict=True):
                layer.net.params[...] = params
                layer.optimizer.load_state_dict(optimizer)
        warmed = net.state_dict()
        samples = [np.empty((n, layer.net.params.size)) for layer in layers]
        for draw in range(n):
            streams = [rng_state(layer.rng) for layer in layers]  # the draws go on sampling
            net.load_state_dict(warmed)
            for layer, stream in zip(layers, streams, strict=True):
                set_rng_state(layer.rng, stream)
                layer.optimizer.recorded = None
            _one_batch(net, warmup, x, y)
            for layer, out in zip(layers, samples, strict=True):
                if layer.optimizer.recorded is None:
                    raise ConfigError(f"rule {name!r}: {layer.name} took no step on the batch")
                np.negative(layer.optimizer.recorded, out=out[draw])
            if progress is not None:
                progress(draw + 1)
    return Estimates(name, [layer.name for layer in layers], samples, exact, reward)


def _one_batch(net: Network, sid: int, x: np.ndarray, y: np.ndarray) -> None:
    backend = LocalBackend(net)
    backend.submit(sid, x, y)
    backend.finish()
