"""Asynchrony as a subject of study (issue 13, part 1), in process: execution functions
(``backend.fire``), per-layer reward delays and the truncated importance-ratio staleness
correction (``network.importance_cap``). Their local == Ray checks are tests/test_ray_asynchrony.py."""

import json
import math

import numpy as np
import pytest

from async_coagents.backends.local import LocalBackend
from async_coagents.checkpoint import load_checkpoint
from async_coagents.core.firing import FiringSchedule, parse_schedule
from async_coagents.core.layers import CoagentLayer
from async_coagents.core.mlp import MLP
from async_coagents.core.network import NetworkSpec, build_network
from async_coagents.core.optim import make_optimizer
from async_coagents.core.settings import LayerOptions
from async_coagents.core.units import Bernoulli
from async_coagents.errors import ConfigError
from async_coagents.experiment import config as cfg
from async_coagents.experiment.run import resume, train
from async_coagents.testing import (
    REPLICA_SEEDS,
    batches,
    check_pickle_round_trip,
    check_replicas_equal_separate_runs,
    check_round_trip_in_flight,
    params,
    replica_batches,
    rule_factory,
)
from tests.regression_cases import digests
from tests.test_run import final_params, quick_config, rows_without_timing, stopped_run

SPEC = dict(n_inputs=5, n_outputs=3, hidden=(6, 5), units="bernoulli", lr=0.01)


def trained(spec: dict, *, seed: int = 3, window: int = 1, reward_delay=0, n: int = 30):
    backend = LocalBackend(build_network(NetworkSpec(**{**SPEC, **spec}), seed), window=window,
                           reward_delay=reward_delay)
    done = []
    for batch in batches(backend.network, n):
        done += backend.submit(*batch)
    done += backend.finish()
    return backend, done


def assert_same_params(a, b):
    for x, y in zip(params(a.network), params(b.network), strict=True):
        np.testing.assert_array_equal(x, y)


# ---- execution functions ----------------------------------------------------------------------
def test_schedules_parse_and_bad_spellings_are_refused():
    assert parse_schedule("always") == FiringSchedule()
    assert parse_schedule("every:1") == FiringSchedule()  # every step
    assert parse_schedule("every:4:3") == FiringSchedule("every", 4, 3)
    assert parse_schedule("p:0").p == 0.0
    for bad in ("sometimes", "every:0", "every:3:3", "p:1.5", "p:nan", "every:x", "p:"):
        with pytest.raises(ConfigError, match="firing schedule"):
            parse_schedule(bad)


@pytest.mark.parametrize("fire", ["every:1", "p:1", ["always", "p:1.0", "always"]])
def test_firing_every_step_reproduces_todays_run_bit_for_bit(fire):
    """p = 1 draws its own firing stream and fires everywhere: nothing else changes."""
    today, done_today = trained({}, window=3, reward_delay=2)
    firing, done_firing = trained({"fire": fire}, window=3, reward_delay=2)
    assert_same_params(today, firing)
    assert done_today == done_firing


@pytest.mark.parametrize("fire", ["p:0", "every:1000:999"])
@pytest.mark.parametrize("optimizer", ["rmsprop", "adam"])
def test_a_layer_that_never_fires_never_changes_and_sends_its_initial_hold(fire, optimizer):
    net = build_network(NetworkSpec(**SPEC, fire=[fire, "always", "always"],
                                    optimizer=optimizer), 4)
    before = net.layers[0].policy.params.copy()
    backend = LocalBackend(net, window=2, reward_delay=1)
    sent = []
    forward = backend.transport.forward

    def recorded(layer, sid, x):
        out = forward(layer, sid, x)
        if layer == 0:
            sent.append(out)
        return out
    backend.transport.forward = recorded
    for batch in batches(net, 25):
        backend.submit(*batch)
    backend.finish()
    assert len(sent) == 25
    for out in sent:
        np.testing.assert_array_equal(out, np.zeros_like(out))  # the hold at a stream's start
    np.testing.assert_array_equal(net.layers[0].policy.params, before)
    assert not np.array_equal(net.layers[1].policy.params,
                              build_network(net.spec, 4).layers[1].policy.params)


def test_firing_with_probability_p_fires_p_of_the_time_within_sampling_error():
    p, streams = 0.3, 8
    backend, _ = trained({"fire": "p:0.3", "hidden": (16, 8)}, n=400)
    for layer in backend.network.layers[:-1]:
        n, k = layer.hold.steps, int(layer.hold.fired)
        assert n == 400 * streams
        assert abs(k - n * p) <= 4.5 * math.sqrt(n * p * (1 - p))  # a 4.5-sigma binomial bound
    a, b = backend.network.layers[:2]
    assert a.hold.fired != b.hold.fired  # each layer its own stream


def test_a_layer_holds_its_last_output_per_stream_where_it_does_not_fire():
    net = build_network(NetworkSpec(**SPEC, fire=["every:3:1", "p:0.5", "always"]), 2)
    layer0, layer1 = net.layers[:2]
    sent0, sent1, fired1 = [], [], []
    for sid, x, _ in batches(net, 9):
        sent0.append(layer0.forward(sid, x))
        sent1.append(layer1.forward(sid, sent0[-1]))
        fired1.append(layer1._pending[sid].fired)
    zeros = np.zeros_like(sent0[0])
    np.testing.assert_array_equal(sent0[0], zeros)  # t = 0 does not fire: the initial hold 0
    for t in range(1, 9):
        if t % 3 != 1:
            np.testing.assert_array_equal(sent0[t], sent0[t - 1])
    previous = np.zeros_like(sent1[0])
    for out, fired in zip(sent1, fired1, strict=True):
        np.testing.assert_array_equal(out[~fired], previous[~fired])
        previous = out
    # a narrower batch (the end of an epoch) has the first streams only; the others keep theirs
    x = next(batches(net, 1, seed=9, batch=3))[1]
    held = layer0.hold.value.copy()
    narrow = layer0.forward(99, x)  # t = 9: does not fire
    np.testing.assert_array_equal(narrow, held[:3])
    np.testing.assert_array_equal(layer0.hold.value, held)


def test_a_stream_that_does_not_fire_takes_no_update_for_that_stream():
    """REINFORCE (G = r), SGD, one batch of 8 streams: the step of a layer that fired on some
    streams only is the step of the same layer always firing with the other streams' rewards 0
    (each fired stream keeps its 1/B share). The sampling stream does not depend on firing, so
    both draw the same actions."""
    def layer(fire):
        policy = MLP([5, 8], "identity", rng=np.random.default_rng(0))
        return CoagentLayer("layer0", policy, Bernoulli(),
                            make_optimizer("sgd", policy.params.shape, 0.5, np.float64),
                            sampling_rng=np.random.default_rng(1),
                            options=LayerOptions(fire=parse_schedule(fire)),
                            firing_rng=np.random.default_rng(2))
    masked, full = layer("p:0.5"), layer("always")
    x = np.random.default_rng(3).normal(size=(8, 5))
    r = np.random.default_rng(4).normal(size=8)
    masked.forward(0, x)
    full.forward(0, x)
    fired = masked._pending[0].fired
    assert fired.any() and not fired.all()
    np.testing.assert_array_equal(masked._pending[0].action, full._pending[0].action)
    masked.reward(0, r)
    full.reward(0, np.where(fired, r, 0.0))
    np.testing.assert_allclose(masked.policy.params, full.policy.params, rtol=0, atol=1e-15)


@pytest.mark.parametrize("optimizer", ["sgd", "rmsprop", "adam"])
@pytest.mark.parametrize("replicas", [None, (1, 2, 5)])
def test_a_layer_that_fires_on_no_stream_of_a_batch_takes_no_update(optimizer, replicas):
    """p:0.3 on 2 streams: about half the batches fire on no stream (of a replica). Such a batch
    moves neither the weights nor the optimizer state (moments, step count) of that replica; a
    batch that fired on some stream steps as before. Driven batch by batch, reward at once."""
    net = build_network(NetworkSpec(**SPEC, fire=["p:0.3", "always", "always"],
                                    optimizer=optimizer), 4 if replicas is None else replicas)
    layer = net.layers[0]
    lead = () if replicas is None else (len(replicas),)
    data = np.random.default_rng(0)
    skipped = stepped = 0
    for sid in range(40):
        layer.forward(sid, data.normal(size=(*lead, 2, 5)))
        fired = layer._pending[sid].fired.any(axis=-1).reshape(-1)  # per replica
        before = layer.policy.params.copy(), layer.optimizer.state_dict()
        layer.reward(sid, data.normal(size=(*lead, 2)))
        after = layer.policy.params, layer.optimizer.state_dict()
        for r, any_fired in enumerate(fired):
            part = (lambda a, r=r: a) if replicas is None else (lambda a, r=r: a[r])
            same = np.array_equal(part(before[0]), part(after[0]))
            for key in ("m", "v"):
                if key in after[1]:
                    same &= np.array_equal(part(before[1][key]), part(after[1][key]))
            steps = [np.broadcast_to(s[1]["steps"], fired.shape)[r] for s in (before, after)]
            if any_fired:
                assert not same and steps[1] == steps[0] + 1, f"batch {sid} replica {r}"
                stepped += 1
            else:
                assert same and steps[1] == steps[0], f"batch {sid} replica {r} moved"
                skipped += 1
    assert skipped > 5 and stepped > 5


def test_adam_on_some_replicas_is_adam_on_each_alone():
    """The masked optimizer step (core/optim.py): the stepping replicas take their separate
    optimizers' steps bit for bit, each with its own step count; the others do not move."""
    rng = np.random.default_rng(0)
    params, grads = rng.normal(size=(3, 7)), rng.normal(size=(6, 3, 7))
    masks = [None, [True, False, True], [False, False, True], None, [True, True, False], None]
    packed = make_optimizer("adam", (3, 7), 0.01)
    alone = [make_optimizer("adam", 7, 0.01) for _ in range(3)]
    separate = params.copy()
    for grad, mask in zip(grads, masks, strict=True):
        packed.step(params, grad, None if mask is None else np.array(mask))
        for r, opt in enumerate(alone):
            if mask is None or mask[r]:
                opt.step(separate[r], grad[r])
    np.testing.assert_array_equal(params, separate)
    np.testing.assert_array_equal(packed.steps, [opt.steps for opt in alone])
    np.testing.assert_array_equal(packed.m, np.stack([opt.m for opt in alone]))
    np.testing.assert_array_equal(packed.v, np.stack([opt.v for opt in alone]))
    state = packed.state_dict()
    again = make_optimizer("adam", (3, 7), 0.01)
    again.load_state_dict(state)
    np.testing.assert_array_equal(again.steps, packed.steps)


# ---- per-layer reward delays -------------------------------------------------------------------
class Recorder:
    """Wraps a transport's reward and feedback calls: (layer, sid, forwards so far)."""

    def __init__(self, backend):
        self.calls = []
        transport, coordinator = backend.transport, backend.coordinator
        for kind in ("reward", "feedback"):
            original = getattr(transport, kind)

            def wrapped(layer, sid, *args, original=original):
                self.calls.append((layer, sid, coordinator.forwards))
                return original(layer, sid, *args)
            setattr(transport, kind, wrapped)


@pytest.mark.parametrize("rule, delays", [("baseline", [3, 0, 2]), ("ac", [4, 2, 1])])
def test_each_layers_reward_arrives_exactly_its_delay_late_and_the_accounting_adds_up(rule,
                                                                                      delays):
    net = build_network(NetworkSpec(**SPEC, rule=rule, critic_units=8), 1)
    backend = LocalBackend(net, window=5, reward_delay=delays)
    recorder = Recorder(backend)
    n = 20
    for batch in batches(net, n):
        backend.submit(*batch)
    for layer, delay in enumerate(delays):
        mine = [(sid, at) for i, sid, at in recorder.calls if i == layer]
        assert mine == [(sid, sid + delay) for sid in range(n - delay)]  # after forward sid+D
    backend.finish()
    for agent, delay in zip(net.agents, delays, strict=True):
        report = agent.report()
        assert report["applied"] == report["forwards"] == n and report["pending"] == 0
        assert report["staleness_max"] == delay  # updates between a batch's forward and its own
        assert report["staleness_sum"] == sum(min(s, delay) for s in range(n))


def test_one_delay_for_all_is_the_same_run_as_that_delay_per_layer():
    one, done_one = trained({"rule": "ac", "critic_units": 8}, window=4, reward_delay=3)
    each, done_each = trained({"rule": "ac", "critic_units": 8}, window=4,
                              reward_delay=[3, 3, 3])
    assert_same_params(one, each)
    assert done_one == done_each


def test_per_layer_delays_are_checked():
    net = build_network(NetworkSpec(**SPEC, rule="ac", critic_units=8), 1)
    with pytest.raises(ConfigError, match="layer agent 0 learns from the message of layer agent 1"):
        LocalBackend(net, window=4, reward_delay=[0, 2, 0])
    with pytest.raises(ConfigError, match="one per layer agent"):
        LocalBackend(net, window=4, reward_delay=[1, 1])
    with pytest.raises(ConfigError, match="window of at least 4"):
        LocalBackend(net, window=3, reward_delay=[3, 1, 0])
    with pytest.raises(ConfigError, match="backend.reward_delay needs one entry per layer agent"):
        cfg.load("quickstart", ["backend.window=3", "backend.reward_delay=[1,1,1]"])
    with pytest.raises(ConfigError, match=r"backend.window >= 4"):
        cfg.load("quickstart", ["backend.window=3", "backend.reward_delay=[3,0]"])


def test_a_sweep_of_per_layer_delays_is_a_list_of_lists():
    runs = cfg.load("quickstart", ["backend.window=2", "backend.reward_delay=[[0,0],[1,0]]"])
    assert [c["backend"]["reward_delay"] for c, _ in runs] == [[0, 0], [1, 0]]
    runs = cfg.load("quickstart", ['backend.fire=[["p:0.5","always"],["p:0.1","always"]]'])
    assert [c["backend"]["fire"] for c, _ in runs] == [["p:0.5", "always"], ["p:0.1", "always"]]


# ---- staleness correction ----------------------------------------------------------------------
def test_the_ratio_is_exactly_one_with_window_one_and_the_update_is_uncorrected():
    plain, _ = trained({"output": "categorical"}, n=40)
    corrected, _ = trained({"output": "categorical", "importance_cap": 1.5}, n=40)
    assert_same_params(plain, corrected)
    for taken in corrected.take_asynchrony():
        assert taken == {"importance_mean": 1.0, "importance_truncated": 0.0}


def one_unit_layer(cap):
    policy = MLP([3, 2], "identity", rng=np.random.default_rng(0))
    layer = CoagentLayer("layer0", policy, Bernoulli(), make_optimizer("sgd", policy.params.shape,
                                                                        0.5, np.float64),
                         sampling_rng=np.random.default_rng(1),
                         options=LayerOptions(importance_cap=cap))
    return layer


def test_the_ratio_equals_a_hand_computed_one_and_is_truncated_at_the_cap():
    """One Bernoulli unit, one example: the policy moves between the forward and the reward; the
    ratio is (pi_now(a) + 1e-5) / (pi_sampled(a) + 1e-5) of the two-logit softmax (§2.1), and the
    SGD step is the uncorrected one times min(ratio, cap)."""
    x = np.array([[0.5, -1.0, 2.0]])
    reward = np.array([1.0])
    steps = {}
    for cap in (None, 10.0, 1.01):
        layer = one_unit_layer(cap)
        start = layer.policy.params.copy()
        layer.forward(0, x)
        action = int(layer._pending[0].action[0, 0])
        layer.policy.biases[0][...] += np.array([-0.7, 0.7])  # another update came first
        moved = layer.policy.params.copy()
        layer.reward(0, reward)
        steps[cap] = layer.policy.params - moved

        def pi(params, action=action):
            w, b = params[:6].reshape(3, 2), params[6:]
            z = x @ w + b
            e = np.exp(z - z.max())
            return (e / e.sum())[0, action]
        rho = (pi(moved) + 1e-5) / (pi(start) + 1e-5)
        if cap is not None:
            mean, truncated = layer.take_asynchrony().values()
            assert mean == pytest.approx(rho, rel=1e-12)
            assert truncated == float(rho > cap)
    assert rho > 1.01  # the move made the sampled action likelier: the small cap truncates
    np.testing.assert_allclose(steps[10.0], rho * steps[None], rtol=1e-12)
    np.testing.assert_allclose(steps[1.01], 1.01 * steps[None], rtol=1e-12)


def test_stale_updates_record_ratios_and_truncations_per_layer_in_metrics(tmp_path):
    config = quick_config(**{"network.output": '"categorical"', "network.lr": 0.05,
                             "network.importance_cap": 1.0, "backend.window": 8,
                             "backend.reward_delay": 7})
    train(config, tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text()
            .splitlines()]
    last = rows[-1]
    assert len(last["importance_mean"]) == len(last["importance_truncated"]) == 3
    assert all(0.0 < t < 1.0 for t in last["importance_truncated"])
    assert "importance_mean" not in rows[0] or rows[0]["importance_mean"] == [None] * 3


# ---- checkpoints, replicas ---------------------------------------------------------------------
ALL_ON = {"network.output": '"categorical"', "network.importance_cap": 2.0,
          "backend.fire": '["p:0.5", "every:3:1", "always"]', "backend.window": 4,
          "backend.reward_delay": "[3, 1, 0]"}


def test_resume_mid_run_with_every_new_setting_is_bit_exact(tmp_path):
    config = quick_config(**ALL_ON)
    train(config, tmp_path / "whole", progress=False)
    stopped = stopped_run(config, tmp_path / "split", stop_after=57)
    assert stopped["status"] == "interrupted"
    saved = load_checkpoint(tmp_path / "split" / "checkpoint.ckpt", kind="run")
    inflight = saved["backend"]["coordinator"]["inflight"]
    assert [b["delivered"] for b in inflight] == [[2, 1], [2, 1], [2]]  # rewards on their way
    resumed = resume(tmp_path / "split", progress=False)
    assert resumed["status"] == "completed"
    whole, whole_state = final_params(tmp_path / "whole")
    split, split_state = final_params(tmp_path / "split")
    for a, b in zip(whole, split, strict=True):
        np.testing.assert_array_equal(a, b)
    assert rows_without_timing(tmp_path / "whole") == rows_without_timing(tmp_path / "split")
    assert digests(whole_state["backend"]) == digests(split_state["backend"])
    assert "fired" in rows_without_timing(tmp_path / "whole")[-1]


def test_batches_in_flight_round_trip_with_firing_delays_and_correction():
    factory = rule_factory("baseline", "bernoulli", fire=("p:0.5", "every:2", "always", "always"),
                           importance_cap=1.5)
    check_round_trip_in_flight(factory, window=4, reward_delay=3)
    check_pickle_round_trip(factory)  # as Ray sends an agent: read-only arrays come back


@pytest.mark.parametrize("rule, family, spec, delays", [
    ("baseline", "bernoulli", {"fire": ("p:0.4", "every:3:2", "always", "always"),
                               "importance_cap": 1.2}, [3, 2, 1, 0]),
    ("ac", "categorical-output", {"fire": ("p:0.5", "p:0.7", "always"),
                                  "importance_cap": 1.5}, [3, 2, 1]),
    ("reinforce", "gaussian", {"fire": ("p:0.6", "every:2:1", "p:0.8")}, 2),
])
def test_replicas_fire_delay_and_correct_as_their_separate_runs(rule, family, spec, delays):
    check_replicas_equal_separate_runs(rule_factory(rule, family, **spec), window=4,
                                       reward_delay=delays)


def test_replicas_that_skip_updates_are_their_separate_runs_with_adam():
    """p:0.3 and p:0.1 on 8 streams: replicas fire on no stream of some batches (and skip those
    updates) at different batches, so their Adam step counts, versions and staleness part; each
    replica is still its separate run bit for bit, batches in flight included."""
    factory = rule_factory("baseline", "bernoulli", fire=("p:0.3", "p:0.1", "always", "always"),
                           optimizer="adam")
    check_replicas_equal_separate_runs(factory, window=4, reward_delay=[3, 2, 1, 0])
    net = factory(list(REPLICA_SEEDS))
    backend = LocalBackend(net, window=4, reward_delay=[3, 2, 1, 0])
    for batch in replica_batches([factory(s) for s in REPLICA_SEEDS], 12):
        backend.submit(*batch)
    backend.finish()
    steps = net.layers[1].optimizer.steps
    assert isinstance(steps, np.ndarray) and len(set(steps.tolist())) > 1  # the masked path ran


def test_replicas_refuse_random_firing_on_a_slow_clock():
    spec = NetworkSpec(**SPEC, fire=["p:0.5", "always", "always"], update_every=[2, 1, 1])
    build_network(spec, 3)  # a single run: batches with no fired stream do not count
    with pytest.raises(ConfigError, match=r"fire\[0\].*update_every > 1.*run.replicas"):
        build_network(spec, [3, 4])


def test_node_groups_fire_each_on_their_own_stream():
    net = build_network(NetworkSpec(**SPEC, fire="p:0.5", units_per_agent=2), 3)
    groups = net.layers[0].groups
    backend = LocalBackend(net, window=2, reward_delay=1)
    for batch in batches(net, 10):
        backend.submit(*batch)
    backend.finish()
    assert len({int(g.hold.fired) for g in groups}) > 1


def test_firing_is_refused_where_it_cannot_apply():
    assert NetworkSpec(**SPEC, fire="p:0.5").fire_for(2).always  # one for all: not the read-out
    with pytest.raises(ConfigError, match=r"fire\[2\]: the supervised read-out fires always"):
        NetworkSpec(**SPEC, fire=["always", "always", "p:0.5"])
    with pytest.raises(ConfigError, match="backprop learner is not a network of coagents"):
        NetworkSpec(**SPEC, learner="backprop", fire=["p:0.5"])
    with pytest.raises(ConfigError, match="one entry per layer agent"):
        NetworkSpec(**SPEC, fire=["p:0.5", "always"])
    with pytest.raises(ConfigError, match="computes its message from its own sampled action"):
        NetworkSpec(**{**SPEC, "output": "categorical", "rule": "hnca", "miss_reward": 0.0},
                    fire=["p:0.5", "always", "always"])
    with pytest.raises(ConfigError, match="firing schedule"):
        cfg.load("quickstart", ['backend.fire=["sometimes", "always"]'])


def test_firing_and_clock_rates_combine():
    """A periodic schedule's idle steps take no step and do not count towards update_every:
    firing every 2nd of 24 steps and stepping every 2 fired batches is 6 optimizer steps."""
    backend, _ = trained({"fire": ["every:2", "p:0.5", "always"], "update_every": [2, 3, 1]},
                         n=24, window=3, reward_delay=[2, 1, 0])
    layer0, layer1, output = backend.network.layers
    assert layer0.version == 6 and layer0.optimizer.steps == 6
    assert layer1.version == 8  # p:0.5 masks per stream; its clock counts every batch it fired in
    assert output.version == 24


def test_replicas_write_the_run_directories_of_separate_runs_with_every_new_setting(tmp_path):
    """Run level (experiment/replicated.py): per-replica firing fractions, importance figures and
    prequential rows are each replica's separate run's."""
    from tests.test_replicas import rows, separate_and_replicated

    seeds = [0, 3]
    sets = [f"{k}={v}" for k, v in {**ALL_ON, "run.updates": 90, "run.eval_every": 30,
                                     "network.hidden": "[8, 6]",
                                     "run.online_metrics": "true"}.items()]
    configs = [cfg.load("quickstart", [*sets, f"run.seed={s}"])[0][0] for s in seeds]
    for alone, packed in separate_and_replicated(tmp_path, configs):
        assert rows(alone) == rows(packed)
        assert "fired" in rows(alone)[-1] and "prequential_accuracy" in rows(alone)[-1]
    assert rows(tmp_path / "separate" / "0")[-1]["fired"] != rows(tmp_path / "separate" / "3")[
        -1]["fired"]


def test_replicas_measure_the_gradient_variance_of_their_separate_runs_when_they_skip():
    """A replica that fired on no stream of a batch took no step and records no gradient."""
    spec = NetworkSpec(**SPEC, fire=["p:0.1", "always", "always"])
    nets = [build_network(spec, s) for s in REPLICA_SEEDS]
    packed = build_network(spec, list(REPLICA_SEEDS))
    for net in (*nets, packed):
        net.record_grad_variance()
    backends = [LocalBackend(net, window=2) for net in nets]
    replicated = LocalBackend(packed, window=2)
    for sid, x, labels in replica_batches(nets, 16):
        replicated.submit(sid, x, labels)
        for r, backend in enumerate(backends):
            backend.submit(sid, x[r], labels[r])
    replicated.finish()
    for backend in backends:
        backend.finish()
    assert isinstance(packed.layers[0].version, np.ndarray)  # the replicas skipped apart
    measured = packed.layers[0].take_grad_variance()
    for r, net in enumerate(nets):
        alone = net.layers[0].take_grad_variance()
        assert (alone is None and math.isnan(measured[r])) or measured[r] == alone, f"replica {r}"
