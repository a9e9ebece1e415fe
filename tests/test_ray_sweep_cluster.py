"""Sweeps whose members are Ray tasks on a three-node ray.cluster_utils.Cluster (issue 12; its own
module and cluster): with the layer-as-actor backend as well, each member's layer actors join the
cluster its task runs in and the run equals the in-process one; Ctrl-C stops the running tasks at
a batch boundary, resumably; a node removed mid-sweep takes one running member with it, which is
resumed from its own checkpoint on a surviving node, and every member completes."""

import contextlib
import json
import os
import signal
import threading
import time

import numpy as np
import pytest

from async_coagents.checkpoint import load_checkpoint
from async_coagents.cli import main
from async_coagents.experiment.run import train
from async_coagents.experiment.sweep import MANIFEST
from tests.conftest import three_node_cluster

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    yield from three_node_cluster()  # later Ray tests start their own instance again (conftest)


def command(c, out, seeds, updates, *extra):
    return ["train", "--out", str(out), "--set", f"run.seed={seeds}",
            "--set", f"run.updates={updates}", "--set", "run.eval_every=500", "--no-progress",
            "--executor", "ray", "--address", c.address, *extra]


def members(out):
    return json.loads((out / MANIFEST).read_text())["members"]


def steps_so_far(directory):
    """The evaluation steps a running member has written (a partial last line left out)."""
    steps = []
    try:
        text = (directory / "metrics.jsonl").read_text()
    except FileNotFoundError:
        return steps
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            steps.append(json.loads(line)["step"])
    return steps


def when_mid_run(out, n, updates, action, done):
    """Call ``action()`` once ``n`` members are running and between 1/8 and 1/2 of their updates
    (so that none ends before it has acted)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        mid = [d for d in out.glob("*-seed*") if not (d / "summary.json").exists()
               and any(updates // 8 <= s <= updates // 2 for s in steps_so_far(d)[-1:])]
        if len(mid) == n:
            done["at"] = sorted(d.name for d in mid)
            action()
            return
        time.sleep(0.02)
    done["timeout"] = True


def network_arrays(directory):
    state = load_checkpoint(directory / "checkpoint.ckpt")
    return [layer["params"] for layer in state["backend"]["network"]["layers"]]


def test_members_with_ray_layer_actors_join_the_cluster_of_their_task(cluster, tmp_path, capsys):
    c, _ = cluster
    out = tmp_path / "sweep"
    assert main(command(c, out, "[0,1]", 60, "--set", "run.eval_every=30",
                        "--backend", "ray")) == 0
    assert [m["status"] for m in members(out)] == ["completed"] * 2
    cluster_nodes = {n["NodeID"] for n in ray.nodes()}
    for m in members(out):
        summary = json.loads((out / m["directory"] / "summary.json").read_text())
        assert summary["backend"] == "ray"
        assert {p["node_id"] for p in summary["placement"]} <= cluster_nodes
        # layer actors on the cluster end with exactly the weights of the in-process run
        local = {**m["config"], "backend": {**m["config"]["backend"], "kind": "local"}}
        train(local, tmp_path / f"local-{m['directory']}", progress=False)
        for a, b in zip(network_arrays(out / m["directory"]),
                        network_arrays(tmp_path / f"local-{m['directory']}"), strict=True):
            np.testing.assert_array_equal(a, b)


def test_ctrl_c_stops_the_running_tasks_resumably(cluster, tmp_path, capsys):
    c, _ = cluster
    # long enough (about 6 s a member here) that the three first members overlap mid-run even
    # when Ray starts their tasks a second or two apart (with 4,000 updates a CI run once saw
    # them never mid-run together, and the sweep completed before Ctrl-C)
    out, updates, done = tmp_path / "sweep", 12_000, {}
    watcher = threading.Thread(target=when_mid_run, args=(
        out, 3, updates, lambda: os.kill(os.getpid(), signal.SIGINT), done))
    watcher.start()
    try:
        assert main(command(c, out, "[0,1,2,3]", updates)) == 130
    finally:
        watcher.join()
    assert "timeout" not in done, "three members never ran at once"
    statuses = [m["status"] for m in members(out)]
    assert statuses == ["interrupted"] * 3 + ["pending"]
    for m in members(out)[:3]:  # each stopped at a batch boundary with its checkpoint there
        summary = json.loads((out / m["directory"] / "summary.json").read_text())
        progress = load_checkpoint(out / m["directory"] / "checkpoint.ckpt")["progress"]
        assert summary["status"] == "interrupted"
        assert 0 < progress["updates"] == summary["updates"] < updates
    text = capsys.readouterr().out
    assert f"continue with: coagents resume {out}" in text
    assert main(["resume", str(out), "--no-progress", "--executor", "ray",
                 "--address", c.address]) == 0
    assert [m["status"] for m in members(out)] == ["completed"] * 4


def test_a_node_removed_mid_sweep_its_member_resumes_elsewhere_and_all_complete(
        cluster, tmp_path, capfd, caplog):
    c, workers = cluster
    out, updates, done = tmp_path / "sweep", 4000, {}
    # one CPU per node and per member: three members run at once, one on each node
    watcher = threading.Thread(target=when_mid_run, args=(
        out, 3, updates, lambda: c.remove_node(workers[0]), done))
    watcher.start()
    try:
        code = main(command(c, out, "[0,1,2,3,4]", updates))
    finally:
        watcher.join()
    assert "timeout" not in done, "three members never ran at once"
    assert code == 0
    records = members(out)
    assert [m["status"] for m in records] == ["completed"] * 5
    restarted = [m for m in records if m["restarts"]]
    assert len(restarted) == 1 and restarted[0]["restarts"] == 1  # the member of the lost node
    assert restarted[0]["directory"] in done["at"]
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(said) == 1  # what happened, and why
    assert said[0].startswith(f"{restarted[0]['name']}: its Ray task died (NodeDiedError: ")
    assert said[0].endswith("resuming it from its last checkpoint (restart 1 of at most 2)")
    assert capfd.readouterr().err == ""  # Ray itself printed nothing about it
    # it went on from its checkpoint: its evaluations are those of one uninterrupted run, and it
    # ends with exactly the weights of the same run in process
    directory = out / restarted[0]["directory"]
    assert steps_so_far(directory) == list(range(0, updates + 1, 500))
    train(restarted[0]["config"], tmp_path / "reference", progress=False)
    for a, b in zip(network_arrays(directory), network_arrays(tmp_path / "reference"),
                    strict=True):
        np.testing.assert_array_equal(a, b)
