"""The check suite every learning rule must pass, importable by rules written outside this
repository: ``check_rule(MyRule)`` or ``check_rule("name")`` runs every check on a small network of
every unit family and raises ``AssertionError`` naming the first one the rule fails.

Mechanical checks (any network, :func:`check_network`): determinism under the seed, a state round
trip after synchronous steps and one with batches in flight (window 4, reward delay 3), read-only
inputs (Ray's object store), every layer learns and nothing leaks, a pickle round trip, and local
equals Ray when a Ray session is running. A rule that supports replicas (``run.replicas``: its
arithmetic on trailing axes, as every built-in rule's) also passes
:func:`check_replicas_equal_separate_runs` (R replicas equal R separate networks bit for bit).
Rule checks, on each coagent layer: every applied policy step equals ``-lr`` times the gradient
of the surrogate ``J = -(1/B) sum_b sum_u G_bu log pi(a_bu | s_b)`` by central differences,
with ``G`` (per example or per unit) from the rule's
:meth:`~async_coagents.core.rules.Rule.signal` — or, for a rule that states its own
``policy_grad`` ``dJ/dz``, the gradient that ``dJ/dz`` makes through the policy network (the
estimator's maths is then the gradient instrument's to check, ``async_coagents.diagnose``); an
example's ``G`` rises with its return (a rule with the wrong sign fails); a rule
holding a baseline subtracts it; a critic rule's message is its updated critic at the downstream
action it declares (``target_policy``: sampled for §3.6, greedy for §3.7).

A check takes a factory ``seed -> Network`` (a list of seeds builds replicas). Ray is never
imported here: the Ray check runs only when the caller has a Ray session running (``ray.init()``).
"""

from __future__ import annotations

import pickle
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from async_coagents.backends.local import LocalBackend
from async_coagents.checkpoint import load_checkpoint, save_checkpoint
from async_coagents.core.baselines import NoBaseline
from async_coagents.core.layers import CoagentLayer
from async_coagents.core.mlp import MLP
from async_coagents.core.network import Network, NetworkSpec, build_network
from async_coagents.core.optim import SGD
from async_coagents.core.rules import RULES, Rule, Step, register
from async_coagents.errors import ConfigError

Factory = Callable[[int], Network]
STEPS = 6
FD_LR = 0.1  # SGD learning rate of the finite-difference check
FD_EPS = 1e-6

#: Small networks of every unit family on which :func:`check_rule` runs a rule.
FAMILIES: dict[str, dict] = {
    "bernoulli": dict(n_inputs=5, n_outputs=3, hidden=(6, 5, 4), units="bernoulli"),
    "categorical": dict(n_inputs=5, n_outputs=3, hidden=(6, 5), units="categorical", n_actions=3,
                        normalisation="symmetric"),
    "gaussian": dict(n_inputs=3, n_outputs=1, task="regression", hidden=(6, 5), units="gaussian",
                     activation="relu"),
    "categorical-output": dict(n_inputs=5, n_outputs=3, hidden=(6, 5), units="bernoulli",
                               output="categorical"),
}


# ---- helpers --------------------------------------------------------------------------------
def batches(net: Network, n: int = STEPS, seed: int = 0, batch: int = 8
            ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``n`` numbered batches ``(sid, x (batch, d), labels (batch,))`` for ``net``'s task."""
    rng = np.random.default_rng(seed)
    spec = net.spec
    for sid in range(n):
        x = rng.normal(size=(batch, spec.n_inputs)).astype(np.float32)
        if spec.task == "classification":
            labels = rng.integers(0, spec.n_outputs, batch)
        else:
            labels = np.sin(x[:, 0]).astype(np.float32)
        yield sid, x, labels


def params(net: Network) -> list[np.ndarray]:
    """Copies of every learnt array: each agent's parameters, critics and the input baseline."""
    arrays = []
    for agent in net.agents:
        arrays.append(agent.net.params.copy())
        critic = getattr(agent, "critic", None)
        if critic is not None:
            arrays.append(critic.net.params.copy())
    if net.input_baseline is not None:
        arrays.append(net.input_baseline.net.params.copy())
    return arrays


def train_in_process(net: Network, data) -> list[float]:
    """Train ``net`` on ``data`` (``(sid, x, labels)`` batches) the way a run does, through the
    local backend with one batch in flight; every reward is delivered when this returns. Returns
    each batch's loss ``-mean(r)``."""
    backend = LocalBackend(net)
    losses = [c.loss for sid, x, labels in data for c in backend.submit(sid, x, labels)]
    return losses + [c.loss for c in backend.finish()]


def run(net: Network, data) -> Network:
    train_in_process(net, data)
    return net


def _same(a: Network, b: Network, what: str) -> None:
    for pa, pb in zip(params(a), params(b), strict=True):
        assert np.array_equal(pa, pb), what


def _coagents(net: Network) -> list[CoagentLayer]:
    return [agent for agent in net.agents if isinstance(agent, CoagentLayer)]


def ray_like_copy(obj):
    """A pickle round trip as Ray makes it: arrays come back as read-only views of the buffers."""
    buffers = []
    data = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    return pickle.loads(data, buffers=[memoryview(b.raw()).toreadonly() for b in buffers])


# ---- mechanical checks ----------------------------------------------------------------------
def check_determinism(factory: Factory) -> None:
    a, b, c = factory(1), factory(1), factory(2)
    for net in (a, b, c):
        run(net, batches(net))
    _same(a, b, "same seed, same data: the runs must be bit-identical")
    assert any(not np.array_equal(pa, pc) for pa, pc in zip(params(a), params(c), strict=True)), \
        "a different seed must change the run"


def check_state_round_trip(factory: Factory) -> None:
    a = factory(1)
    data = list(batches(a, 2 * STEPS))
    run(a, data[:STEPS])
    b = factory(7)  # another seed: everything must come from the state
    b.load_state_dict(a.state_dict())
    run(a, data[STEPS:])
    run(b, data[STEPS:])
    _same(a, b, "a restored network must continue bit-exactly")


def check_round_trip_in_flight(factory: Factory, window: int = 4, reward_delay: int = 3) -> None:
    """Stopped with ``reward_delay`` batches in flight, saved through the checkpoint codec and
    resumed in a network of another seed, a run continues bit for bit."""
    a = LocalBackend(factory(1), window=window, reward_delay=reward_delay)
    data = list(batches(a.network, 3 * STEPS))
    for batch in data[:STEPS]:
        a.submit(*batch)
    assert len(a.coordinator.inflight) == min(window - 1, reward_delay, STEPS)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.ckpt"
        save_checkpoint(path, a.state_dict(), kind="run")
        state = load_checkpoint(path, kind="run")
    b = LocalBackend(factory(7), window=window, reward_delay=reward_delay)
    b.load_state_dict(state)
    for backend in (a, b):
        for batch in data[STEPS:]:
            backend.submit(*batch)
        backend.finish()
    _same(a.network, b.network, "a network restored with batches in flight must continue "
                                "bit-exactly")


def check_read_only_inputs(factory: Factory) -> None:
    """Arrays from Ray's object store are read-only: a rule must never write into its inputs."""
    a, b = factory(1), factory(1)
    frozen = []
    for sid, x, labels in batches(a):
        x.flags.writeable = False
        labels.flags.writeable = False
        frozen.append((sid, x, labels))
    run(a, frozen)
    run(b, batches(b))
    _same(a, b, "read-only inputs changed the run")


def check_every_layer_learns_and_nothing_leaks(factory: Factory) -> None:
    net = factory(1)
    before = [agent.net.params.copy() for agent in net.agents]
    run(net, batches(net))
    for agent, start in zip(net.agents, before, strict=True):
        stats = agent.stats
        assert agent.pending == 0, f"{agent.name} kept batches after their update"
        assert stats.applied == STEPS and stats.unknown == 0 and stats.dropped == 0, agent.name
        assert len(agent.applied_batches) == STEPS and agent.applied_batches.ranges == [(0, STEPS)]
        assert stats.staleness_max == 0, "a synchronous run has no staleness"
        assert not np.array_equal(agent.net.params, start), f"{agent.name} never learnt"
        assert np.isfinite(agent.net.params).all()


def check_pickle_round_trip(factory: Factory) -> None:
    """An agent sent to another process (Ray pickles it) continues exactly like the original."""
    a = factory(1)
    data = list(batches(a, 2 * STEPS))
    run(a, data[:STEPS])
    b = ray_like_copy(a)
    run(a, data[STEPS:])
    run(b, data[STEPS:])
    _same(a, b, "a pickled network must continue bit-exactly")


def ray_session_running() -> bool:
    """True when the caller has a Ray session (the suite never starts one)."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def check_local_equals_ray(factory: Factory, window: int = 4, reward_delay: int = 3) -> bool:
    """With a Ray session running: the Ray backend ends bit for bit like the local one. Returns
    False (checked nothing) without a session."""
    if not ray_session_running():
        return False
    from async_coagents.backends.ray_backend import RayBackend  # only with a session

    local = LocalBackend(factory(1), window=window, reward_delay=reward_delay)
    remote = RayBackend(factory(1), {"window": window, "reward_delay": reward_delay})
    try:
        for backend in (local, remote):
            for batch in batches(local.network, 2 * STEPS):
                backend.submit(*batch)
            backend.finish()
        remote.state_dict()  # refreshes the driver's mirror from the actors
    finally:
        remote.close()
    _same(local.network, remote.network, "the Ray backend must end bit for bit like the local one")
    return True


REPLICA_SEEDS = (1, 2, 5)


def replica_batches(nets: list[Network], n: int = STEPS, batch: int = 8
                    ) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Per replica its own data (``batches`` of seed r), stacked: ``x (R, B, d)``, ``labels
    (R, B)``; replica r's slice is what a separate run of it is fed."""
    streams = [list(batches(net, n, seed=r, batch=batch)) for r, net in enumerate(nets)]
    return [(parts[0][0], np.stack([p[1] for p in parts]), np.stack([p[2] for p in parts]))
            for parts in zip(*streams, strict=True)]


def assert_same_state(a, b, where: str = "state") -> None:
    """Two states are equal bit for bit: every array (values, shape, dtype) and every value."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        assert (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), f"{where}: keys {list(a)} {list(b)}"
        for key in a:
            assert_same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert type(a) is type(b) and (a == b or (a != a and b != b)), f"{where}: {a!r} != {b!r}"


def check_replicas_equal_separate_runs(factory: Factory, window: int = 4,
                                       reward_delay: int = 3) -> None:
    """R replicas of a network (``run.replicas``, ``core/replicas.py``), each fed its own data,
    end with the state, losses and evaluation of R separate networks of the same seeds, bit for
    bit, batches in flight included."""
    from async_coagents.core.metrics import evaluate
    from async_coagents.core.replicas import slice_state

    seeds = REPLICA_SEEDS
    separate = [LocalBackend(factory(s), window=window, reward_delay=reward_delay) for s in seeds]
    replicated = LocalBackend(factory(list(seeds)), window=window, reward_delay=reward_delay)
    data = replica_batches([b.network for b in separate], 2 * STEPS)
    for sid, x, labels in data[:STEPS + 1]:
        done = replicated.submit(sid, x, labels)
        for r, backend in enumerate(separate):
            alone = backend.submit(sid, x[r], labels[r])
            assert [c.replica(r) for c in done] == alone, f"replica {r}: losses of batch {sid}"
    state = replicated.state_dict()  # batches in flight
    for r, backend in enumerate(separate):
        assert_same_state(slice_state(state, r), backend.state_dict(), f"replica {r} in flight")
    for sid, x, labels in data[STEPS + 1:]:
        replicated.submit(sid, x, labels)
        for r, backend in enumerate(separate):
            backend.submit(sid, x[r], labels[r])
    done = replicated.finish()
    for r, backend in enumerate(separate):
        assert [c.replica(r) for c in done] == backend.finish(), f"replica {r}: the last losses"
    state = replicated.state_dict()
    x_eval = data[0][1][0]
    labels_eval = data[0][2][0]
    measured = evaluate(replicated.network, x_eval, labels_eval)
    for r, backend in enumerate(separate):
        assert_same_state(slice_state(state, r), backend.state_dict(), f"replica {r}")
        assert measured[r] == evaluate(backend.network, x_eval, labels_eval), \
            f"replica {r}: evaluation"


# ---- rule checks ----------------------------------------------------------------------------
class _Recorder:
    """Runs one more synchronous batch and records, per coagent layer, the rule's steps, signals
    and messages as they happen (the rule's own methods, wrapped on the instance)."""

    def __init__(self, net: Network) -> None:
        self.steps: dict[str, Step] = {}
        self.signals: dict[str, np.ndarray] = {}
        self.messages: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.policy_grads: dict[str, np.ndarray] = {}
        self.entries: dict[str, object] = {}
        for layer in _coagents(net):
            self._wrap(layer)

    def _wrap(self, layer: CoagentLayer) -> None:
        rule, name = layer.rule, layer.name
        signal, message, learn = rule.signal, rule.message, layer._learn
        policy_grad = rule.policy_grad

        def recording_policy_grad(step):
            d = policy_grad(step)
            self.steps[name] = step
            self.policy_grads[name] = np.array(d, dtype=np.float64)
            return d

        def recording_signal(step):
            g = signal(step)
            self.steps[name] = step
            self.signals[name] = np.array(g, dtype=np.float64)
            return g

        def recording_message(step):
            sent = message(step)
            if sent is not None and rule.critic is not None and rule.target_policy:
                at = step.out if rule.target_policy == "sampled" else step.greedy_out()
                self.messages[name] = (np.array(sent), rule.critic.value(step.state, at))
            return sent

        def recording_learn(entry):
            self.entries[name] = entry
            return learn(entry)

        rule.signal, rule.message, layer._learn = recording_signal, recording_message, \
            recording_learn
        if overrides_policy_grad(rule):  # the default calls the recorded signal
            rule.policy_grad = recording_policy_grad

    @staticmethod
    def unwrap(net: Network) -> None:
        for layer in _coagents(net):
            for attr in ("signal", "message", "policy_grad"):
                layer.rule.__dict__.pop(attr, None)
            layer.__dict__.pop("_learn", None)


def overrides_policy_grad(rule: Rule) -> bool:
    """Whether ``rule``'s step is its own ``dJ/dz`` rather than the score-function estimate of
    its signal."""
    return type(rule).policy_grad is not Rule.policy_grad


def _central_differences(theta: np.ndarray, surrogate: Callable[[], float],
                         params: np.ndarray) -> np.ndarray:
    grad = np.empty_like(theta)
    params[...] = theta
    for i in range(theta.size):
        params[i] = theta[i] + FD_EPS
        up = surrogate()
        params[i] = theta[i] - FD_EPS
        down = surrogate()
        params[i] = theta[i]
        grad[i] = (up - down) / (2 * FD_EPS)
    return grad


def _surrogate_gradient(layer: CoagentLayer, theta: np.ndarray, entry, g: np.ndarray
                        ) -> np.ndarray:
    """Central differences of ``J(theta) = -(1/B) sum_b sum_u G_bu log pi(a_bu | s_b; theta)``
    in float64 (over the sampling units only, §2.3), ``G`` one return per example or per unit."""
    policy = MLP(layer.net.sizes, layer.net.activation, dtype=np.float64, zero_init=True)
    x = np.asarray(entry.x, dtype=np.float64)
    unit = layer.unit
    g = g if g.ndim == 2 else g[:, None]

    def surrogate() -> float:
        dist = unit.policy(policy(x))
        weighted = g * unit.log_prob(dist, entry.action)
        if entry.mask is not None:
            weighted = weighted[:, entry.mask]
        return float(-weighted.sum() / len(x))

    return _central_differences(theta, surrogate, policy.params)


def _linear_surrogate_gradient(layer: CoagentLayer, theta: np.ndarray, entry, d: np.ndarray
                               ) -> np.ndarray:
    """Central differences of ``J(theta) = sum_bk d_bk z_bk(theta)``: the gradient that a rule's
    own ``dJ/dz`` ``d`` makes through the layer's policy network, in float64."""
    policy = MLP(layer.net.sizes, layer.net.activation, dtype=np.float64, zero_init=True)
    x = np.asarray(entry.x, dtype=np.float64)
    return _central_differences(theta, lambda: float((d * policy(x)).sum()), policy.params)


def check_rule_estimators(factory: Factory) -> None:
    """On a fixed batch after :data:`STEPS` updates, for every coagent layer: the applied SGD step
    is ``-lr dJ/dtheta`` with ``G`` from the rule's signal; an example's ``G`` rises with its
    return; a baseline is subtracted; a critic's message is at its declared downstream action."""
    net = factory(1)
    data = list(batches(net, STEPS + 1))
    run(net, data[:STEPS])
    layers = [layer for layer in _coagents(net) if layer.update_every == 1]
    for layer in layers:
        layer.set_optimizer(SGD(layer.net.params.size, FD_LR, layer.dtype))
    before = {layer.name: layer.net.params.astype(np.float64) for layer in layers}
    recorder = _Recorder(net)
    try:
        run(net, data[STEPS:])
    finally:
        _Recorder.unwrap(net)
    checked = 0
    for layer in layers:
        name, rule = layer.name, layer.rule
        entry = recorder.entries.get(name)
        if entry is None or entry.greedy:
            continue  # a frozen layer takes no step (§2.4)
        checked += 1
        applied = (before[name] - layer.net.params.astype(np.float64)) / FD_LR
        if overrides_policy_grad(rule):
            assert name in recorder.policy_grads, f"{name}: the step did not use policy_grad"
            d = recorder.policy_grads[name]
            if entry.mask is not None:
                assert not d.reshape(len(d), len(entry.mask), -1)[:, ~entry.mask].any(), (
                    f"{name}: policy_grad moves units outside the subset (§2.3)")
            expected = _linear_surrogate_gradient(layer, before[name], entry, d)
            what = "the gradient its policy_grad dJ/dz makes through the policy"
        else:
            assert name in recorder.signals, f"{name}: the policy step did not use the signal"
            expected = _surrogate_gradient(layer, before[name], entry, recorder.signals[name])
            what = "the gradient of -mean(G log pi) with the rule's G"
        scale = max(1.0, float(np.abs(expected).max()))
        tol = 1e-6 if layer.dtype == np.float64 else 2e-4
        assert np.allclose(applied, expected, rtol=tol, atol=tol * scale), (
            f"{name}: the applied step is not -lr times {what} (max difference "
            f"{float(np.abs(applied - expected).max()):.3g})")
        if name in recorder.signals:
            g, step = recorder.signals[name], recorder.steps[name]
            _check_signal_follows_the_return(name, rule, step, g)
            _check_baseline_is_subtracted(name, rule, step, g)
        if name in recorder.messages:
            sent, at_declared = recorder.messages[name]
            assert np.allclose(sent, at_declared, rtol=1e-5, atol=1e-6), (
                f"{name}: the critic's message is not Q_i(s_i, a') at the "
                f"{rule.target_policy} downstream action the rule states "
                f"({type(rule).__name__}.target_policy)")
    assert checked or not _coagents(net), "no coagent layer took a policy step that could be checked"


def _shifted(step: Step, c: float) -> Step:
    """``step`` with the return of example 0 (its reward and its message from above) raised by c."""
    def plus(value):
        if value is None:
            return None
        value = np.array(value)
        value[0] += value.dtype.type(c)
        return value

    return Step(step.state, step.out, step.dist, step.action, plus(step.reward),
                plus(step.feedback), step.unit, step.dtype, step.applied, step.policy, step.mask)


def _check_signal_follows_the_return(name: str, rule: Rule, step: Step, g: np.ndarray) -> None:
    """Raising the return of one example (its reward and its message from above) raises its G:
    the rule credits what it is paid, with the right sign."""
    c = 0.5
    moved = np.asarray(type(rule).signal(rule, _shifted(step, c)), dtype=np.float64) - \
        np.asarray(type(rule).signal(rule, step), dtype=np.float64)
    assert np.all(moved[0] > 0), (
        f"{name}: G must rise with the return; raising one example's return by {c} moved its G "
        f"by {float(np.min(moved[0])):.3g} ({type(rule).__name__}.signal has the wrong sign)")


def _check_baseline_is_subtracted(name: str, rule: Rule, step: Step, g: np.ndarray) -> None:
    """A rule that holds a baseline ``b`` reports ``G = R - b(s)``."""
    if isinstance(rule.baseline, NoBaseline):
        return
    returns = np.asarray(type(rule).returns(rule, step), dtype=np.float64)
    zero = np.zeros_like(step.reward)
    value = -np.asarray(rule.baseline.advantage(zero, step.state), dtype=np.float64)
    assert np.abs(value).max() > 0, f"{name}: the baseline never learnt (it is still zero)"
    now = np.asarray(type(rule).signal(rule, step), dtype=np.float64)
    assert np.allclose(now, returns - value, rtol=1e-5, atol=1e-6), (
        f"{name}: {type(rule).__name__} holds a baseline but G is not R - b "
        "(the baseline is never subtracted)")


MECHANICAL_CHECKS = [check_determinism, check_state_round_trip, check_round_trip_in_flight,
                     check_read_only_inputs, check_every_layer_learns_and_nothing_leaks,
                     check_pickle_round_trip]
CHECKS = [*MECHANICAL_CHECKS, check_rule_estimators]


def check_network(factory: Factory, *, ray: bool = True) -> None:
    """Every check on the networks ``factory`` builds (local equals Ray too when ``ray`` and a
    Ray session is running)."""
    for check in CHECKS:
        check(factory)
    if ray:
        check_local_equals_ray(factory)


def rule_factory(rule: str, family: str, **spec) -> Factory:
    """``seed -> Network`` of the unit family ``family`` (see :data:`FAMILIES`) learning by the
    registered rule ``rule``."""
    extra = {"reinforce_updates": 3} if RULES[rule].reinforce_phase else {}
    settings = {**FAMILIES[family], "rule": rule, "critic_units": 8, "lr": 0.01, **extra, **spec}

    def make(seed: int) -> Network:
        return build_network(NetworkSpec(**settings), seed)

    return make


def _can_train(rule: str, family: str) -> bool:
    try:
        rule_factory(rule, family)(0)
    except ConfigError:
        return False
    return True


def check_rule(rule: str | type[Rule], *, families: tuple[str, ...] | None = None,
               ray: bool = True) -> None:
    """Run the whole suite on ``rule`` (a registered name or a :class:`Rule` subclass, registered
    for the duration of the check if it is not) with every network of :data:`FAMILIES` the rule
    can train (its ``check_network``; at least one)."""
    temporary = False
    if isinstance(rule, type):
        temporary = rule.name not in RULES
        if temporary:
            register(rule)
        name = rule.name
    else:
        name = rule
    try:
        trainable = [family for family in families or tuple(FAMILIES)
                     if _can_train(name, family)]
        assert trainable, f"rule {name!r} can train none of the networks {families or FAMILIES}"
        for family in trainable:
            factory = rule_factory(name, family)
            for check in CHECKS:
                try:
                    check(factory)
                except AssertionError as exc:
                    raise AssertionError(f"rule {name!r}, {family} units, {check.__name__}: "
                                         f"{exc}") from exc
            if ray:
                check_local_equals_ray(factory)
    finally:
        if temporary:
            del RULES[name]
