"""Fault tolerance on one node: a layer actor killed mid-run restarts from its own checkpoint, the
run completes and still learns, every batch is accounted for, and no update is applied twice."""

import pytest

from async_coagents.checkpoint import load_checkpoint
from async_coagents.core.record import BatchRecord
from async_coagents.experiment import config as cfg
from async_coagents.experiment.run import Run, RunDirectory

pytestmark = pytest.mark.usefixtures("ray_session")


def config(**sets):
    ((c, _),) = cfg.load("quickstart", [
        "run.updates=3000", "run.eval_every=500", "network.hidden=[32, 16]",
        'backend.kind="ray"', "backend.window=4", "backend.reward_delay=3",
        "backend.checkpoint_every=20", *[f"{k}={v}" for k, v in sets.items()]])
    return c


def run_with(config, out, at_update, action):
    """Run ``config``; call ``action(run)`` right after update ``at_update``."""
    run = Run(config, RunDirectory.create(out, config), progress=False)
    train_one = run._train_one

    def train_one_then_act(batch):
        train_one(batch)
        if run.state.updates + 1 == at_update:
            action(run)

    run._train_one = train_one_then_act
    try:
        return run.run()
    finally:
        run.close()


def test_a_killed_layer_actor_restarts_from_its_checkpoint_and_the_run_still_learns(tmp_path,
                                                                                  ray_session):
    killed = {}

    def kill_layer1(run):
        actor = run.backend.transport.actors[1][0]
        killed.update(ray_session.get(actor.info.remote()))
        ray_session.kill(actor, no_restart=False)  # Ray restarts it; calls in flight are retried

    summary = run_with(config(), tmp_path / "run", at_update=437, action=kill_layer1)
    assert summary["status"] == "completed" and summary["replays"] >= 1
    # measured: 1.0 without the kill, and 1.0 in 6 of 6 runs with it (where the kill falls in
    # the message stream varies from run to run); chance is 0.5
    assert summary["final"]["test_accuracy"] >= 0.95
    accounting = summary["accounting"]
    assert accounting["complete"]
    layer1 = next(a for a in accounting["agents"] if a["name"] == "layer1")
    placement = next(p for p in summary["placement"] if p["name"] == "layer1")
    assert placement["incarnation"] == 1 and killed["incarnation"] == 0
    assert layer1["duplicates"] > 0  # retried or replayed messages arrived twice ...
    assert layer1["applied"] == layer1["applied_batches"]  # ... and none was applied twice
    assert layer1["applied_batches"] + layer1["lost_batches"] == 3000
    for other in (a for a in accounting["agents"] if a["name"] != "layer1"):
        assert other["applied_batches"] == 3000 and other["lost_batches"] == 0
    # the actor's own checkpoint holds the same record: every batch id at most once
    saved = load_checkpoint(tmp_path / "run" / "agents" / "layer1.ckpt", kind="agent")
    applied = BatchRecord.from_list(saved["agent"]["records"]["applied"])
    assert len(applied) == saved["agent"]["stats"]["applied"] == layer1["applied_batches"]

