"""Replicas on the Ray backend: a layer actor holds its layer's R replicas and messages carry the
replica axis, so a replicated network trained over Ray ends bit for bit like the same replicated
network trained in process (which ``tests/test_replicas.py`` shows equal to R separate runs), for
a representative set of rules and unit families, batches in flight and a reward delay included;
and a run with ``run.replicas`` and ``backend.kind = "ray"`` writes the run directories of the
local one."""

import pytest

from async_coagents.backends.local import LocalBackend
from async_coagents.backends.ray_backend import RayBackend
from async_coagents.core.network import NetworkSpec, build_network
from async_coagents.experiment import config as cfg
from async_coagents.experiment.replicated import train_replicas
from async_coagents.testing import (
    REPLICA_SEEDS,
    STEPS,
    assert_same_state,
    replica_batches,
    rule_factory,
)
from tests.test_replicas import assert_same_runs

pytestmark = pytest.mark.usefixtures("ray_session")

#: Every message kind a replicated actor sends: a reward alone (baseline), critic feedback and
#: greedy downstream actions (ac-offpolicy), per-unit messages (weight-max), a supervised
#: read-out and backward pass through straight-through units, and the Gaussian family.
REPRESENTATIVE = {
    "baseline-gaussian": rule_factory("baseline", "gaussian"),
    "ac-offpolicy-bernoulli": rule_factory("ac-offpolicy", "bernoulli"),
    "weight-max-categorical-output": rule_factory("weight-max", "categorical-output"),
    "hnca-categorical-output": rule_factory("hnca", "categorical-output"),
    "ac-categorical": rule_factory("ac", "categorical"),
    # replicas that fire on no stream of some batches skip those updates apart (issue 13): per-
    # replica Adam step counts, versions and staleness travel as arrays
    "skipping-adam": rule_factory("baseline", "bernoulli", optimizer="adam",
                                  fire=("p:0.3", "p:0.1", "always", "always")),
    "straight-through": lambda seed: build_network(NetworkSpec(
        learner="straight-through", n_inputs=5, n_outputs=3, hidden=(6, 5), lr=0.01), seed),
}


def split(completed) -> list[list]:
    """Each replica's share of the completed batches (``Completed`` holds per-replica arrays)."""
    return [[c.replica(r) for c in completed] for r in range(len(REPLICA_SEEDS))]


@pytest.mark.parametrize("name", REPRESENTATIVE)
def test_replicas_over_ray_end_like_replicas_in_process(name):
    factory = REPRESENTATIVE[name]
    seeds = list(REPLICA_SEEDS)
    options = {"window": 3, "reward_delay": 2}
    local = LocalBackend(factory(seeds), **options)
    remote = RayBackend(factory(seeds), options)
    data = replica_batches([factory(s) for s in seeds], 2 * STEPS)
    try:
        for sid, x, labels in data:
            assert split(remote.submit(sid, x, labels)) == split(local.submit(sid, x, labels))
        assert split(remote.finish()) == split(local.finish())
        assert remote.take_non_finite() == local.take_non_finite() == set()
        assert_same_state(remote.state_dict(), local.state_dict(), "replicated state")
    finally:
        remote.close()


def test_a_replicated_ray_run_writes_the_run_directories_of_a_local_one(tmp_path):
    seeds = [0, 3]
    sets = ["data.means=2", "backend.window=2", "backend.reward_delay=1"]
    for kind in ("local", "ray"):
        configs = [cfg.load("correlated-pg-d95", [*sets, f"backend.kind={kind}",
                                                  f"run.seed={s}"])[0][0] for s in seeds]
        train_replicas(configs, [tmp_path / kind / str(s) for s in seeds], progress=False)
    for s in seeds:
        assert_same_runs(tmp_path / "local" / str(s), tmp_path / "ray" / str(s))


def test_a_killed_replicated_actor_restarts_from_its_own_checkpoint_and_ends_as_without_it(
        tmp_path, ray_session):
    """A layer actor's own checkpoint holds its R replicas (their generator states too); killed
    mid-run, it restarts from it, is sent again what it missed, and ends as the local run."""
    factory = REPRESENTATIVE["ac-offpolicy-bernoulli"]
    seeds = list(REPLICA_SEEDS)
    options = {"window": 3, "reward_delay": 2, "checkpoint_every": 2, "max_restarts": 2}
    local = LocalBackend(factory(seeds), window=3, reward_delay=2)
    remote = RayBackend(factory(seeds), options, agent_dir=str(tmp_path / "agents"))
    data = replica_batches([factory(s) for s in seeds], 3 * STEPS)
    try:
        for t, (sid, x, labels) in enumerate(data):
            if t == 2 * STEPS:
                ray_session.kill(remote.transport.actors[1][0], no_restart=False)
            assert split(remote.submit(sid, x, labels)) == split(local.submit(sid, x, labels))
        assert split(remote.finish()) == split(local.finish())
        assert_same_state(remote.state_dict(), local.state_dict(), "replicated state")
        assert remote.transport.recovery_report()["lost_messages"] == 0
        assert sum(a["restarts"] for a in remote.transport.recovery_report()["agents"]) == 1
    finally:
        remote.close()
