"""Issue 13, the free-running schedule and its replay (``backends/free_running.py``): the recorded
schedule's delays and checks, a free coordinator whose replies arrive at random times replayed
bit for bit, a replay of the ordered schedule's pattern equal to that schedule, resuming the
record, and the config's rules. On Ray (``test_ray_free_running.py``) a real free run."""

import numpy as np
import pytest

from async_coagents.backends.free_running import (
    SCHEDULE_FILE,
    FreeCoordinator,
    RecordedSchedule,
    ReplayCoordinator,
)
from async_coagents.backends.local import LocalBackend, LocalTransport
from async_coagents.errors import CheckpointError, ConfigError, ProtocolError
from async_coagents.experiment import config as cfg
from async_coagents.testing import STEPS, batches, params, rule_factory


def test_delays_count_the_forwards_after_a_batch_before_its_reward():
    # forwards 0..4; batch 0 rewarded before forward 2 (1 late), batches 1 and 2 before
    # forward 4 (2 and 1 late); batches 3 and 4 at the end of the stream (1 and 0 late)
    schedule = RecordedSchedule([0, 0, 1, 0, 2], window=3)
    assert schedule.delays() == [1, 2, 1, 1, 0]
    described = schedule.describe()
    assert described["delay_histogram"] == {"0": 1, "1": 3, "2": 1}
    assert described["delay_mean"] == 1.0 and described["delay_max"] == 2


def test_a_recorded_schedule_round_trips_and_bad_files_are_refused(tmp_path):
    path = tmp_path / SCHEDULE_FILE
    RecordedSchedule([0, 0, 1, 0, 2], window=3).save(path)
    loaded = RecordedSchedule.load(path)
    assert loaded.rewards_before == [0, 0, 1, 0, 2] and loaded.window == 3
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        RecordedSchedule.load(path)
    RecordedSchedule([0, 2], window=3).save(path)  # two rewards before two batches were sent
    with pytest.raises(CheckpointError, match="delivers 2 rewards, of 1 batches forwarded"):
        RecordedSchedule.load(path)
    RecordedSchedule([0, 0, 0, 0], window=3).save(path)
    with pytest.raises(CheckpointError, match="4 batches in flight, over its window of 3"):
        RecordedSchedule.load(path)


class LateTransport(LocalTransport):
    """In process, but a reply 'arrives' only at a random later look (seeded): a free
    coordinator over it makes an irregular order, as actors of different speeds do."""

    def __init__(self, network, seed: int = 0, p: float = 0.35) -> None:
        super().__init__(network)
        self.rng = np.random.default_rng(seed)
        self.p = p

    def ready(self, handle) -> bool:
        return bool(self.rng.random() < self.p)

    def wait(self, handles, timeout) -> None:
        return None


def _coordinator_run(coordinator, network, n: int):
    """``n`` batches through ``coordinator``, every reward delivered at the end (those held to
    ride with a next forward too, as a backend's ``finish`` does)."""
    for batch in batches(network, n):
        coordinator.submit(*batch)
    coordinator.finish()
    coordinator.transport.deliver_held()


@pytest.mark.parametrize("rule, family", [("baseline", "bernoulli"), ("ac-offpolicy", "bernoulli"),
                                          ("ac", "categorical-output")])
def test_a_free_order_replayed_ends_bit_for_bit_the_same(rule, family):
    factory = rule_factory(rule, family)
    free_net, replay_net = factory(3), factory(3)
    free = FreeCoordinator(LateTransport(free_net), free_net.objective, window=5)
    _coordinator_run(free, free_net, 4 * STEPS)
    delays = free.record.delays()
    assert len(delays) == 4 * STEPS and len(set(delays)) > 2  # an irregular order
    assert max(delays) <= 4  # never more than the window in flight
    replay = ReplayCoordinator(LocalTransport(replay_net), replay_net.objective,
                               schedule=free.record, window=5)
    _coordinator_run(replay, replay_net, 4 * STEPS)
    for a, b in zip(params(free_net), params(replay_net), strict=True):
        assert np.array_equal(a, b)


def test_replaying_the_ordered_pattern_equals_the_ordered_schedule():
    """Reward delay D delivers batch s's reward right after forward s + D, i.e. before forward
    s + D + 1: as a recorded schedule, one reward before every forward from D + 1 on."""
    factory, delay, n = rule_factory("baseline", "bernoulli"), 3, 4 * STEPS
    ordered = LocalBackend(factory(2), window=delay + 1, reward_delay=delay)
    for batch in batches(ordered.network, n):
        ordered.submit(*batch)
    ordered.finish()
    schedule = RecordedSchedule([0] * (delay + 1) + [1] * (n - delay - 1), window=delay + 1)
    assert schedule.delays() == [delay] * (n - delay) + list(range(delay - 1, -1, -1))
    net = factory(2)
    replay = ReplayCoordinator(LocalTransport(net), net.objective, schedule=schedule,
                               window=delay + 1)
    _coordinator_run(replay, net, n)
    for a, b in zip(params(ordered.network), params(net), strict=True):
        assert np.array_equal(a, b)


def test_a_replay_refuses_to_go_past_its_record():
    net = rule_factory("baseline", "bernoulli")(0)
    replay = ReplayCoordinator(LocalTransport(net), net.objective,
                               schedule=RecordedSchedule([0, 1], window=1), window=1)
    with pytest.raises(ProtocolError, match="holds 2 forwards"):
        _coordinator_run(replay, net, 3)


def test_a_resumed_free_record_continues_from_its_checkpoint(tmp_path):
    path = tmp_path / SCHEDULE_FILE
    net = rule_factory("baseline", "bernoulli")(0)
    free = FreeCoordinator(LateTransport(net), net.objective, window=4, path=path)
    data = list(batches(net, 2 * STEPS))
    for batch in data[:STEPS]:
        free.submit(*batch)
    state = free.state_dict()  # writes the record of the first STEPS forwards
    for batch in data[STEPS:]:  # more forwards, recorded after the checkpoint ...
        free.submit(*batch)
    free.state_dict()  # ... and saved: the file is ahead of the first checkpoint
    resumed = FreeCoordinator(LocalTransport(net), net.objective, window=4, path=path)
    resumed.load_state_dict(state)
    assert resumed.record.rewards_before == free.record.rewards_before[:STEPS]
    RecordedSchedule([0, 0], window=4).save(path)  # older than the checkpoint
    with pytest.raises(CheckpointError, match="older than the checkpoint"):
        FreeCoordinator(LocalTransport(net), net.objective, window=4,
                        path=path).load_state_dict(state)


@pytest.mark.parametrize("sets, message", [
    (['backend.schedule="free"'], "runs on the Ray backend"),
    (['backend.kind="ray"', 'backend.schedule="free"', "backend.window=4",
      "backend.reward_delay=2"], "reward_delay"),
    (['backend.schedule="replay"'], "needs backend.replay"),
    (['backend.replay="x.ckpt"'], "goes with backend.schedule = 'replay'"),
    (["backend.free_rate=10"], "backend.free_rate goes with"),
    (['backend.schedule="bogus"'], "schedule"),
])
def test_schedule_settings_that_do_not_go_together_are_refused(sets, message):
    with pytest.raises(ConfigError, match=message):
        cfg.load("quickstart", sets)


def test_replicas_refuse_a_free_schedule():
    with pytest.raises(ConfigError, match="set sweep.replicas = 1"):
        cfg.load("quickstart", ['backend.kind="ray"', 'backend.schedule="free"',
                                "run.replicas=2", "run.updates=10"])


def test_replay_refuses_a_run_that_is_not_free(tmp_path):
    from async_coagents.experiment.replay import replay
    from async_coagents.experiment.run import train

    ((config, _),) = cfg.load("quickstart", ["run.updates=20", "run.eval_every=10"])
    train(config, tmp_path / "ordered", progress=False)
    with pytest.raises(ConfigError, match="not a free-running run"):
        replay(tmp_path / "ordered")
