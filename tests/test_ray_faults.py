"""Fault tolerance on one node: a layer actor killed mid-run restarts from its own checkpoint, the
driver sends it again every message since, and the run ends exactly as without the fault, no
update lost or applied twice; an actor takes messages only in their order; what cannot be sent
again is counted as lost, with the reason; Ray's lines about dead workers stay off the terminal."""

import logging
import os
import signal

import numpy as np
import pytest

from async_coagents.backends import ray_backend
from async_coagents.backends.ray_backend import LayerActor, RayBackend
from async_coagents.checkpoint import load_checkpoint
from async_coagents.core.network import NetworkSpec, build_network
from async_coagents.core.record import BatchRecord
from async_coagents.core.rules import RULES, Rule, register
from async_coagents.errors import MessageOrderError, NonDeterminismError
from async_coagents.experiment import config as cfg
from async_coagents.experiment.chaos import run_with
from async_coagents.experiment.run import train

pytestmark = pytest.mark.usefixtures("ray_session")

__all__ = ["run_with"]  # the cluster tests drive their runs with it too

#: The killed-actor run's length: the kill (after update 437) falls between two of its checkpoints
#: with most of the run still to come; restart, replay and bit-identity do not depend on the length.
UPDATES = 1200


def config(*sets):
    ((c, _),) = cfg.load("quickstart", [
        f"run.updates={UPDATES}", "run.eval_every=300", "network.hidden=[32, 16]",
        'backend.kind="ray"', "backend.window=4", "backend.reward_delay=3",
        "backend.checkpoint_every=20", *sets])
    return c


def final_params(run_dir):
    layers = load_checkpoint(run_dir / "checkpoint.ckpt")["backend"]["network"]["layers"]
    return [layer["params"] for layer in layers]


def test_a_killed_layer_actor_restarts_from_its_checkpoint_and_the_run_ends_as_without_it(
        tmp_path, ray_session):
    killed = {}

    def kill_layer1(run):
        actor = run.backend.transport.actors[1][0]
        killed.update(ray_session.get(actor.info.remote()))
        ray_session.kill(actor, no_restart=False)  # Ray restarts it; the driver sends again

    summary = run_with(config(), tmp_path / "run", at_update=437, action=kill_layer1)
    assert summary["status"] == "completed"
    recovery = summary["recovery"]
    layer1_recovery = next(a for a in recovery["agents"] if a["name"] == "layer1")
    assert layer1_recovery["restarts"] == 1 and layer1_recovery["replayed"] > 0
    assert recovery["lost_messages"] == 0
    placement = next(p for p in summary["placement"] if p["name"] == "layer1")
    assert placement["incarnation"] == 1 and killed["incarnation"] == 0
    accounting = summary["accounting"]
    assert accounting["complete"]
    for agent in accounting["agents"]:  # every batch applied exactly once, none lost
        assert agent["applied"] == agent["applied_batches"] == UPDATES
        assert agent["lost_batches"] == agent["duplicates"] == agent["retried_forwards"] == 0
    # exactly the weights of the in-process simulation of the same run
    train(config('backend.kind="local"'), tmp_path / "local", progress=False)
    for a, b in zip(final_params(tmp_path / "run"), final_params(tmp_path / "local"), strict=True):
        np.testing.assert_array_equal(a, b)
    # the actor's own checkpoint holds the same record: every batch id once
    saved = load_checkpoint(tmp_path / "run" / "agents" / "layer1.ckpt", kind="agent")
    applied = BatchRecord.from_list(saved["agent"]["records"]["applied"])
    assert len(applied) == saved["agent"]["stats"]["applied"] == UPDATES
    assert saved["seq"] > UPDATES  # the number of the last message it applied


def test_what_cannot_be_sent_again_is_lost_and_the_summary_says_why(tmp_path, ray_session,
                                                                    caplog):
    """layer1's checkpoint file is deleted before it is killed: it restarts from the run's
    starting state, and the messages the driver let go of (the run's checkpoint at update 300
    covered them) cannot be sent again. Actors save only with the run here, so none writes its
    file again between the deletion and the kill."""
    def delete_checkpoint_and_kill(run):
        (tmp_path / "run" / "agents" / "layer1.ckpt").unlink()
        ray_session.kill(run.backend.transport.actors[1][0], no_restart=False)

    with caplog.at_level(logging.WARNING, logger="async_coagents.backends.ray_backend"):
        summary = run_with(config("run.updates=600", "run.eval_every=100",
                                  "backend.checkpoint_every=0"), tmp_path / "run",
                           at_update=350, action=delete_checkpoint_and_kill)
    assert summary["status"] == "completed"
    layer1 = next(a for a in summary["recovery"]["agents"] if a["name"] == "layer1")
    assert layer1["restarts"] == 1 and layer1["lost_messages"] > 0
    (why,) = layer1["why"]
    assert "checkpoint file was missing" in why and "could not be sent again" in why
    assert summary["recovery"]["lost_messages"] == layer1["lost_messages"]
    lines = [r.getMessage() for r in caplog.records if "layer1 restarted" in r.getMessage()]
    assert len(lines) == 1 and "are lost" in lines[0]
    accounting = {a["name"]: a for a in summary["accounting"]["agents"]}
    assert accounting["layer1"]["lost_batches"] > 0  # rewards of batches it no longer held
    assert accounting["layer0"]["lost_batches"] == accounting["output"]["lost_batches"] == 0


def test_an_actor_takes_a_message_only_when_it_is_the_next_one(ray_session):
    spec = NetworkSpec(n_inputs=3, n_outputs=2, hidden=(4,), units="bernoulli", rule="baseline")
    actor = LayerActor.remote(build_network(spec, 0).layers[0])
    x = np.ones((2, 3), np.float32)
    with pytest.raises(MessageOrderError, match="message 2 refused, the next one it expects is 1"):
        ray_backend.get(actor.step.remote(2, 0, [], x))
    assert ray_session.get(actor.stats.remote(0))["forwards"] == 0  # the agent was not touched
    assert ray_backend.get(actor.step.remote(1, 0, [], x)).shape == (2, 4)
    with pytest.raises(MessageOrderError, match="message 1 refused"):  # a repeat is refused too
        ray_backend.get(actor.step.remote(1, 0, [], x))
    with pytest.raises(MessageOrderError, match="applied the messages up to 1, the driver sent 2"):
        ray_backend.get(actor.stats.remote(2))  # a read at a point the actor has not reached
    assert ray_session.get(actor.stats.remote(1))["forwards"] == 1
    ray_session.kill(actor)


class UnseededNoise(Rule):
    """REINFORCE with noise from an RNG that no checkpoint holds: G = r + e, e ~ N(0, 1) fresh."""

    name = "test-unseeded-noise"
    section = "(test)"
    summary = "REINFORCE plus noise no checkpoint holds"

    def signal(self, step):
        noise = np.random.default_rng().normal(size=step.reward.shape)
        return step.reward + noise.astype(step.reward.dtype)


def test_an_agent_that_is_not_a_function_of_its_messages_is_a_loud_error(tmp_path):
    register(UnseededNoise)
    spec = NetworkSpec(n_inputs=6, n_outputs=1, task="regression", hidden=(7,),
                       units="gaussian", rule=UnseededNoise.name, lr=0.05)
    backend = RayBackend(build_network(spec, 0), {"window": 2, "reward_delay": 1,
                                                  "checkpoint_every": 1000, "max_restarts": -1},
                         agent_dir=str(tmp_path / "agents"))
    rng = np.random.default_rng(0)
    try:
        for sid in range(20):
            backend.submit(sid, rng.normal(size=(8, 6)).astype(np.float32),
                           rng.normal(size=8).astype(np.float32))
        backend.finish()
        (output,) = backend.transport.actors[-1]
        os.kill(ray_backend.get(output.pid.remote()), signal.SIGKILL)
        # its checkpoint is its first: sent again, its updates take other noise, and the
        # predictions (continuous) of later forwards, which the driver holds, come out otherwise
        with pytest.raises(NonDeterminismError, match="answered differently than the first time"):
            backend.layer_stats()
    finally:
        backend.close()
        del RULES[UnseededNoise.name]


def test_ray_lines_about_dead_workers_go_to_the_debug_log_and_the_rest_is_printed(
        monkeypatch, caplog):
    from ray._private import worker

    printed = []
    monkeypatch.setattr(worker, "print_to_stdstream",
                        lambda data, ignore_prefix=False: printed.append(data["lines"]))
    ray_backend.quiet_fault_lines()
    ray_backend.quiet_fault_lines()  # once per process: not wrapped twice
    noise = ("A worker died or was killed while executing a task by an unexpected system error.",
             "Task LayerActor.step failed. There are infinite retries remaining, so the task will "
             "be retried.")
    with caplog.at_level(logging.DEBUG, logger="async_coagents.backends.ray_backend"):
        worker.print_to_stdstream({"lines": [*noise, "something else"], "pid": "raylet",
                                   "is_err": False}, False)
        worker.print_to_stdstream({"lines": [noise[0]], "pid": "raylet", "is_err": False},
                                  False)
        worker.print_to_stdstream({"lines": ["a worker's own line"], "pid": 123, "is_err": True},
                                  False)
    assert printed == [["something else"], ["a worker's own line"]]
    assert [r.getMessage() for r in caplog.records] == [f"ray: {line}" for line in
                                                        (*noise, noise[0])]
