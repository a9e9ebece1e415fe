"""The Ray backend against the local backend: bit-for-bit equality for
every learning rule (one batch in flight; and window 4 with reward delay 3), node groups,
staleness, accounting, errors from actors, and a run through the run directory machinery."""

import json

import numpy as np
import pytest
import ray

from async_coagents.backends.local import LocalBackend
from async_coagents.backends.ray_backend import RayBackend
from async_coagents.core.network import NetworkSpec, build_network
from async_coagents.core.rules import RULES
from async_coagents.errors import ConfigError, ProtocolError

pytestmark = pytest.mark.usefixtures("ray_session")
BATCHES = 25


def spec_for(rule, **extra):
    if RULES[rule].reinforce_phase:
        extra.setdefault("reinforce_updates", 5)
    settings = dict(n_inputs=6, n_outputs=3, hidden=(7, 6, 5), units="bernoulli", rule=rule,
                    critic_units=8, lr=0.01, **extra)
    try:
        return NetworkSpec(**settings)
    except ConfigError:  # a rule for a stochastic output coagent only (hnca, weight-max)
        return NetworkSpec(**settings, output="categorical")


def data(n=BATCHES, seed=0):
    rng = np.random.default_rng(seed)
    return [(sid, rng.normal(size=(8, 6)).astype(np.float32), rng.integers(0, 3, 8))
            for sid in range(n)]


def drive(backend, batches):
    losses = []
    for sid, x, y in batches:
        losses += [(c.sid, c.loss) for c in backend.submit(sid, x, y)]
    losses += [(c.sid, c.loss) for c in backend.finish()]
    return losses


def agent_params(network):
    return [agent.net.params.copy() for agent in network.agents]


def ray_params(backend):
    state = backend.state_dict()  # pulls every actor's state into the driver's mirror
    assert state["coordinator"]["inflight"] == []
    return agent_params(backend.network)


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_one_batch_in_flight_ray_equals_local(rule):
    spec, batches = spec_for(rule), data()
    local = LocalBackend(build_network(spec, 3))
    local_losses = drive(local, batches)
    ray_backend = RayBackend(build_network(spec, 3), {"window": 1, "reward_delay": 0})
    try:
        ray_losses = drive(ray_backend, batches)
        assert local_losses == ray_losses
        assert_same(agent_params(local.network), ray_params(ray_backend))
        assert local.network.layers[0].version == BATCHES  # the runs learnt
    finally:
        ray_backend.close()


@pytest.mark.parametrize("rule", sorted(RULES))
def test_window_4_reward_delay_3_ray_reproduces_the_local_simulation(rule):
    spec, batches = spec_for(rule), data()
    local = LocalBackend(build_network(spec, 5), window=4, reward_delay=3)
    ray_backend = RayBackend(build_network(spec, 5), {"window": 4, "reward_delay": 3})
    try:
        assert drive(local, batches) == drive(ray_backend, batches)
        assert_same(agent_params(local.network), ray_params(ray_backend))
        stats = ray_backend.layer_stats()
        assert [s["staleness_max"] for s in stats] == [3] * len(stats)
    finally:
        ray_backend.close()


def test_node_groups_on_ray_match_the_local_simulation_and_account_for_every_batch():
    spec = NetworkSpec(n_inputs=6, n_outputs=3, hidden=(7, 6), units="bernoulli",
                       rule="baseline", lr=0.01, units_per_agent=2, update_every=(1, 2, 1))
    local = LocalBackend(build_network(spec, 1), window=3, reward_delay=1)
    ray_backend = RayBackend(build_network(spec, 1), {"window": 3, "reward_delay": 1})
    try:
        assert len(ray_backend.transport.actors[0]) == 4  # 7 units in groups of 2
        assert drive(local, data()) == drive(ray_backend, data())
        stats = ray_backend.layer_stats()
        assert_same(agent_params(local.network), ray_params(ray_backend))
        assert [s["name"] for s in stats][:5] == ["layer0.g0", "layer0.g1", "layer0.g2",
                                                  "layer0.g3", "layer1.g0"]
        for s in stats:
            assert s["forwards"] == s["applied"] == BATCHES
            assert s["unknown"] == s["dropped"] == s["evicted"] == 0
            assert s["staleness_max"] == 1 if s["name"].startswith("layer0") else True
        # layer 1 steps every 2 batches: with delay 1 it sees at most one step in between
        assert all(s["staleness_max"] <= 1 for s in stats if s["name"].startswith("layer1"))
    finally:
        ray_backend.close()


def test_evaluation_on_ray_equals_local():
    spec = spec_for("baseline", units_per_agent=3)
    local = LocalBackend(build_network(spec, 2), window=2, reward_delay=1)
    ray_backend = RayBackend(build_network(spec, 2), {"window": 2, "reward_delay": 1})
    try:
        x = np.random.default_rng(9).normal(size=(50, 6)).astype(np.float32)
        y = np.arange(50) % 3
        for (sid, bx, by) in data(10):
            local.submit(sid, bx, by)
            ray_backend.submit(sid, bx, by)
        a, b = local.evaluate(x, y), ray_backend.evaluate(x, y)  # mid-run, batches in flight
        assert a == b and len(a["entropy"]) == 3
    finally:
        ray_backend.close()


def test_an_error_inside_an_actor_comes_back_as_the_projects_error():
    spec = NetworkSpec(n_inputs=2, n_outputs=1, task="regression", hidden=(3,),
                       units="gaussian", rule="baseline", lr=0.01)
    ray_backend = RayBackend(build_network(spec, 0), {"window": 1, "reward_delay": 0})
    try:
        x = np.ones((4, 2), np.float32)
        with pytest.raises(ProtocolError, match="shape"):  # wrong input width, raised by layer0
            ray_backend.submit(0, np.ones((4, 5), np.float32), np.zeros(4, np.float32))
            ray_backend.finish()
        ray_backend.submit(1, x, np.zeros(4, np.float32))
    finally:
        ray_backend.close()


def test_a_ray_run_stopped_and_resumed_ends_like_an_uninterrupted_local_run(tmp_path):
    from async_coagents.checkpoint import load_checkpoint
    from async_coagents.experiment import config as cfg
    from async_coagents.experiment.run import resume, train
    from tests.test_run import stopped_run

    def config(kind):
        ((c, _),) = cfg.load("quickstart", [
            "run.updates=80", "run.eval_every=20", "network.hidden=[8, 6]",
            f'backend.kind="{kind}"', "backend.window=3", "backend.reward_delay=2",
            "backend.units_per_actor=4"])
        return c

    train(config("local"), tmp_path / "local", progress=False)
    stopped = stopped_run(config("ray"), tmp_path / "ray", stop_after=33)
    assert stopped["status"] == "interrupted" and stopped["accounting"]["in_flight"] == 2
    address = ray.get_runtime_context().gcs_address  # the driver died; the cluster lives on
    summary = resume(tmp_path / "ray", progress=False, address=address)
    assert summary["status"] == "completed" and summary["backend"] == "ray"
    assert json.loads((tmp_path / "ray" / "config.json").read_text())["backend"]["address"] == address
    layers = [load_checkpoint(tmp_path / d / "checkpoint.ckpt")["backend"]["network"]["layers"]
              for d in ("local", "ray")]
    for a, b in zip(*layers, strict=True):
        for ga, gb in zip(a.get("groups", [a]), b.get("groups", [b]), strict=True):
            np.testing.assert_array_equal(ga["params"], gb["params"])
    names = [s["name"] for s in summary["accounting"]["agents"]]
    assert names[:3] == ["layer0.g0", "layer0.g1", "layer1.g0"]
    assert all(s["applied"] == 80 for s in summary["accounting"]["agents"])


def test_bench_measures_pipeline_parallelism_and_reports_the_ratios():
    """`coagents bench --only pipeline` end to end (figures are printed, never asserted)."""
    from async_coagents.bench import run_benchmarks

    lines = []
    out = run_benchmarks(quick=True, only=["pipeline"], report=lines.append)
    assert [r["name"] for r in out["results"]] == [
        "pipeline-local-1cpu", "pipeline-local-blas", "pipeline-ray-w1", "pipeline-ray-w8"]
    assert all(r["updates"] > 0 and r["samples_per_s"] > 0 for r in out["results"])
    assert set(out["summary"]) == {"pipeline_ray_w8_over_local_1cpu",
                                   "pipeline_ray_w8_over_local_blas"}
    assert any(line.startswith("wide layers: Ray backend (window 8)") for line in lines)
