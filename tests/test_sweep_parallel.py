"""Parallel sweeps on local processes (issue 12): ``--jobs 2`` writes the run directories that
``--jobs 1`` writes; a member whose worker process dies is resumed from its own checkpoint and
completes (or, dying every time, is marked failed while the others complete); Ctrl-C stops the
running members at a batch boundary, resumable, and starts no other; the ``[sweep]`` section says
where members run and never what they compute."""

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from async_coagents.checkpoint import load_checkpoint
from async_coagents.cli import _parser, main, train_overrides
from async_coagents.errors import ConfigError
from async_coagents.experiment import config as cfg
from async_coagents.experiment.run import Run
from async_coagents.experiment.sweep import MANIFEST, Sweep, execution
from async_coagents.experiment.sweep_processes import ProcessExecutor

QUICK = ["--set", "run.updates=60", "--set", "run.eval_every=20", "--no-progress"]
SEEDS = ["--set", "run.seed=[0,1,2]"]
#: What differs between two identical runs: how long they took.
TIMINGS = {"wall_s", "train_s", "samples_per_s", "updates_per_s", "interval_train_s"}
HERE = "tests.test_sweep_parallel"


def member_dirs(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.is_dir())


def manifest(out: Path) -> list[dict]:
    return json.loads((out / MANIFEST).read_text())["members"]


def leaves(value, path=""):
    """Every leaf of a nested structure of dicts and lists, by path (timings left out)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key not in TIMINGS:
                yield from leaves(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from leaves(item, f"{path}[{i}]")
    else:
        yield path, value


def assert_same_run(a: Path, b: Path) -> None:
    """Two run directories hold the same run: config, every metric row and the summary (timings
    aside), every entry of the final checkpoint, arrays bit for bit."""
    assert (a / "config.json").read_text() == (b / "config.json").read_text()
    rows = [[dict(leaves(json.loads(line))) for line in (d / "metrics.jsonl").read_text().splitlines()]
            for d in (a, b)]
    assert rows[0] == rows[1] and len(rows[0]) > 1
    summaries = [dict(leaves(json.loads((d / "summary.json").read_text()))) for d in (a, b)]
    assert summaries[0] == summaries[1]
    states = [dict(leaves(load_checkpoint(d / "checkpoint.ckpt"))) for d in (a, b)]
    assert states[0].keys() == states[1].keys()
    arrays = 0
    for key, value in states[0].items():
        other = states[1][key]
        if isinstance(value, np.ndarray):
            arrays += 1
            assert value.dtype == other.dtype, key
            np.testing.assert_array_equal(value, other, err_msg=key)
        else:
            assert value == other, key
    assert arrays > 0


def test_jobs_2_writes_the_run_directories_that_jobs_1_writes(tmp_path, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["train", "--out", str(one), *SEEDS, *QUICK, "--jobs", "1"]) == 0
    assert main(["train", "--out", str(two), *SEEDS, *QUICK, "--jobs", "2"]) == 0
    text = capsys.readouterr().out
    assert f"sweep {two}: 3 runs, 3 completed" in text
    assert text.count("quickstart: completed after 60 updates") == 6  # a line per member, twice
    assert [d.name for d in member_dirs(one)] == [d.name for d in member_dirs(two)]
    for a, b in zip(member_dirs(one), member_dirs(two), strict=True):
        assert_same_run(a, b)
    assert [m["status"] for m in manifest(two)] == ["completed"] * 3


def test_packed_groups_on_two_jobs_write_the_run_directories_that_one_job_writes(tmp_path):
    """sweep.replicas packs members that differ in run.seed only into replicated runs (each equal
    to its separate runs: tests/test_replicas.py); two groups on two worker processes write the
    run directories that one job writes."""
    one, two = tmp_path / "one", tmp_path / "two"
    packed = ["--set", "run.seed=[0,1,2,3]", "--set", "sweep.replicas=2", *QUICK]
    assert main(["train", "--out", str(one), *packed, "--jobs", "1"]) == 0
    assert main(["train", "--out", str(two), *packed, "--jobs", "2"]) == 0
    assert [m["status"] for m in manifest(two)] == ["completed"] * 4
    groups = [json.loads((d / "summary.json").read_text())["replicas"]["seeds"]
              for d in member_dirs(two)]
    assert groups == [[0, 1], [0, 1], [2, 3], [2, 3]]
    for a, b in zip(member_dirs(one), member_dirs(two), strict=True):
        assert_same_run(a, b)


# ---- hooks run inside the worker processes (ProcessExecutor(setup=...)) -------------------------
def _patch_train_one(act):
    """Call ``act(run)`` after each update of every run in this worker."""
    train_one = Run._train_one

    def patched(self, batch):
        train_one(self, batch)
        act(self)

    Run._train_one = patched


def kill_seed_1_once():
    """Seed 1's worker dies (SIGKILL) at update 50, the first time only (its checkpoint is at 40)."""
    marker = Path(os.environ["COAGENTS_TEST_DIR"]) / "killed"

    def act(run):
        if run.config["run"]["seed"] == 1 and run.state.updates + 1 == 50 and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)

    _patch_train_one(act)


def kill_group_of_seed_1_once():
    """The worker of the group holding seed 1 dies (SIGKILL) at update 50, the first time only
    (its replicas' checkpoints are at 40)."""
    from async_coagents.experiment.replicated import ReplicatedRun

    marker = Path(os.environ["COAGENTS_TEST_DIR"]) / "killed"
    train_one = ReplicatedRun._train_one

    def patched(self, sid, x, y):
        train_one(self, sid, x, y)
        if 1 in self.seeds and self.replicas[0].state.updates + 1 == 50 and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)

    ReplicatedRun._train_one = patched


def kill_seed_1_always():
    def act(run):
        if run.config["run"]["seed"] == 1 and run.state.updates + 1 == 10:
            os.kill(os.getpid(), signal.SIGKILL)

    _patch_train_one(act)


def terminate_seed_1_once():
    """Seed 1's worker is sent SIGTERM (by something other than its sweep) at update 30, once."""
    marker = Path(os.environ["COAGENTS_TEST_DIR"]) / "terminated"

    def act(run):
        if run.config["run"]["seed"] == 1 and run.state.updates + 1 == 30 and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGTERM)

    _patch_train_one(act)


def ctrl_c_at_update_30():
    """Seeds 0 and 1 both reach update 30; then seed 1 presses Ctrl-C for the sweep (SIGINT to
    the sweep's process), and each waits there until the sweep has passed the stop on to it."""
    folder = Path(os.environ["COAGENTS_TEST_DIR"])

    def act(run):
        seed = run.config["run"]["seed"]
        if run.state.updates + 1 != 30:
            return
        (folder / f"at30-{seed}").touch()
        deadline = time.monotonic() + 60
        while not all((folder / f"at30-{s}").exists() for s in (0, 1)):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        if seed == 1:
            os.kill(os.getppid(), signal.SIGINT)
        while not run.stop.requested:  # the sweep forwards it to both workers
            assert time.monotonic() < deadline
            time.sleep(0.01)

    _patch_train_one(act)


def _sweep(out: Path, seeds: str = "[0,1]") -> Sweep:
    return Sweep.plan(out, cfg.load("quickstart", ["run.updates=60", "run.eval_every=20",
                                                   f"run.seed={seeds}"]))


@pytest.fixture
def hooks_dir(tmp_path, monkeypatch):
    folder = tmp_path / "hooks"
    folder.mkdir()
    monkeypatch.setenv("COAGENTS_TEST_DIR", str(folder))  # the spawned workers inherit it
    return folder


def test_a_member_whose_worker_is_killed_resumes_from_its_checkpoint_and_completes(
        tmp_path, hooks_dir, capsys):
    sweep = _sweep(tmp_path / "sweep")
    reported = []
    sweep.run_parallel(ProcessExecutor(2, setup=f"{HERE}:kill_seed_1_once"), max_retries=2,
                       report=reported.append)
    assert (hooks_dir / "killed").exists()  # the worker did die
    assert sweep.exit_code() == 0
    assert [m.status for m in sweep.members] == ["completed"] * 2
    assert [m.restarts for m in sweep.members] == [0, 1]
    assert [m["restarts"] for m in manifest(sweep.path)] == [0, 1]
    assert sorted(m.name for m in reported) == sorted(m.name for m in sweep.members)
    lines = sweep.summary_lines()
    assert lines[2].endswith("(its worker died; resumed from its checkpoint once)")
    assert "resumed" not in lines[1]
    # it went on from its checkpoint at update 40 (not from the start): the metrics are those of
    # an uninterrupted run, and so is everything in its final checkpoint
    reference = _sweep(tmp_path / "reference")
    reference.run(progress=False)
    for a, b in zip(member_dirs(sweep.path), member_dirs(reference.path), strict=True):
        assert_same_run(a, b)


def test_a_group_whose_worker_is_killed_resumes_from_its_replicas_checkpoints(tmp_path,
                                                                               hooks_dir):
    sweep = Sweep.plan(tmp_path / "sweep", cfg.load("quickstart", [
        "run.updates=60", "run.eval_every=20", "run.seed=[0,1,2,3]", "sweep.replicas=2"]))
    sweep.run_parallel(ProcessExecutor(2, setup=f"{HERE}:kill_group_of_seed_1_once"))
    assert (hooks_dir / "killed").exists()
    assert [m.status for m in sweep.members] == ["completed"] * 4
    assert [m.restarts for m in sweep.members] == [1, 1, 0, 0]  # the group's members, once
    reference = Sweep.plan(tmp_path / "reference", cfg.load("quickstart", [
        "run.updates=60", "run.eval_every=20", "run.seed=[0,1,2,3]", "sweep.replicas=2"]))
    reference.run(progress=False)
    for a, b in zip(member_dirs(sweep.path), member_dirs(reference.path), strict=True):
        assert_same_run(a, b)  # resumed from update 40: as if never interrupted


def test_a_member_whose_worker_dies_every_time_fails_and_the_others_complete(tmp_path):
    sweep = _sweep(tmp_path / "sweep")
    sweep.run_parallel(ProcessExecutor(2, setup=f"{HERE}:kill_seed_1_always"), max_retries=1)
    assert [m.status for m in sweep.members] == ["completed", "failed"]
    failed = sweep.members[1]
    assert failed.restarts == 1
    assert "its worker process was killed by SIGKILL (2 times in this command" in failed.error
    assert f"coagents resume {sweep.path}" in failed.error
    assert sweep.exit_code() == 1
    assert manifest(sweep.path)[1]["error"] == failed.error
    text = "\n".join(sweep.summary_lines())
    assert "1 completed, 1 failed" in text and "killed by SIGKILL" in text


def test_a_worker_stopped_from_outside_the_sweep_is_resumed(tmp_path, hooks_dir):
    sweep = _sweep(tmp_path / "sweep")
    sweep.run_parallel(ProcessExecutor(2, setup=f"{HERE}:terminate_seed_1_once"))
    assert (hooks_dir / "terminated").exists()
    assert [m.status for m in sweep.members] == ["completed"] * 2
    assert [m.restarts for m in sweep.members] == [0, 1]
    assert not sweep.stopped and sweep.exit_code() == 0


def test_ctrl_c_stops_the_running_members_resumably_and_starts_no_other(tmp_path, hooks_dir):
    sweep = _sweep(tmp_path / "sweep", "[0,1,2]")
    sweep.run_parallel(ProcessExecutor(2, setup=f"{HERE}:ctrl_c_at_update_30"))
    assert sweep.stopped and sweep.exit_code() == 130
    assert [m.status for m in sweep.members] == ["interrupted", "interrupted", "pending"]
    for member in sweep.members[:2]:  # stopped at the batch boundary, with a checkpoint there
        assert member.summary["status"] == "interrupted" and member.summary["updates"] == 30
        state = load_checkpoint(sweep.directory(member) / "checkpoint.ckpt")
        assert state["progress"]["updates"] == 30
    assert not sweep.directory(sweep.members[2]).exists()
    text = "\n".join(sweep.summary_lines())
    assert "the sweep stopped: 1 of its 3 runs did not start" in text
    assert f"continue with: coagents resume {sweep.path}" in text
    assert [m["status"] for m in manifest(sweep.path)] == ["interrupted", "interrupted",
                                                           "pending"]
    again = Sweep.open(sweep.path)
    again.run_parallel(ProcessExecutor(2))
    assert [m.status for m in again.members] == ["completed"] * 3 and again.exit_code() == 0
    for member in again.members:
        rows = (again.directory(member) / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(row)["step"] for row in rows] == [0, 20, 40, 60]


# ---- the [sweep] section and the command line -----------------------------------------------------
def test_the_sweep_section_is_not_a_sweep_axis_and_its_address_is_for_ray():
    with pytest.raises(ConfigError, match=r"sweep.jobs is a list, but \[sweep\] says how a sweep "
                                          "runs"):
        cfg.load("quickstart", ["sweep.jobs=[1,2]"])
    with pytest.raises(ConfigError, match="sweep.address .* is for the Ray executor, and "
                                          "sweep.executor is 'local'"):
        cfg.load("quickstart", ['sweep.address="head:6379"'])
    with pytest.raises(ConfigError, match="sweep.cpus_per_member"):
        cfg.load("quickstart", ["sweep.cpus_per_member=0"])


@pytest.mark.parametrize("section, flags, expected", [
    ({}, {}, ("local", 0)),
    ({}, {"jobs": 1}, ("local", 1)),
    ({}, {"jobs": 3}, ("processes", 3)),
    ({"jobs": 4}, {}, ("processes", 4)),
    ({"jobs": 4}, {"jobs": 1}, ("local", 1)),  # --jobs 1 is the in-process path
    ({"executor": "processes"}, {}, ("processes", 0)),  # one per CPU
    ({"executor": "ray"}, {"jobs": 1}, ("ray", 1)),
    ({}, {"executor": "ray", "address": "head:6379"}, ("ray", 0)),
])
def test_the_executor_follows_the_config_and_the_command_line(section, flags, expected):
    defaults = cfg.defaults()["sweep"]
    plan = execution({**defaults, **section}, **flags)
    assert (plan.executor, plan.jobs) == expected
    assert plan.address == (flags.get("address", "") if plan.executor == "ray" else "")
    with pytest.raises(ConfigError, match="--jobs must be 1 or more"):
        execution(defaults, jobs=-1)


def test_address_names_the_sweeps_cluster_with_the_ray_executor_else_the_layer_actors():
    args = _parser().parse_args(["train", "--address", "head:6379"])
    assert 'backend.address="head:6379"' in train_overrides(args)
    args = _parser().parse_args(["train", "--executor", "ray", "--address", "head:6379"])
    assert train_overrides(args) == []


def test_the_sweep_section_changes_neither_the_members_nor_what_their_checkpoints_match(
        tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["train", "--out", str(out), *SEEDS, *QUICK]) == 0
    before = {d.name: (d / "checkpoint.ckpt").read_bytes() for d in member_dirs(out)}
    # the same sweep, to run elsewhere: continued (nothing left to run), not refused
    assert main(["train", "--out", str(out), *SEEDS, *QUICK, "--set", "sweep.jobs=2",
                 "--set", "sweep.max_retries=0"]) == 0
    assert "3 runs, 3 completed" in capsys.readouterr().out
    assert before == {d.name: (d / "checkpoint.ckpt").read_bytes() for d in member_dirs(out)}
    first = member_dirs(out)[0]
    config = json.loads((first / "config.json").read_text())
    config["sweep"]["executor"] = "ray"
    (first / "config.json").write_text(json.dumps(config))
    (first / "summary.json").unlink()  # resume must read the checkpoint, written under "local"
    assert main(["resume", str(first), "--no-progress"]) == 0


def test_a_ray_task_on_a_node_that_cannot_see_the_sweep_directory_fails_its_member(tmp_path):
    from async_coagents.experiment.sweep_ray import member_task

    ((config, _),) = cfg.load("quickstart", ["run.updates=20"])
    elsewhere = tmp_path / "not-shared"  # what a node without the shared storage sees
    elsewhere.mkdir()
    (outcome,) = member_task([str(elsewhere / "member")], [config], None, str(elsewhere))
    assert outcome.status == "failed"
    assert outcome.error.startswith(f"the sweep directory {elsewhere} is not visible on node ")
    assert "storage every node sees" in outcome.error
    assert not (elsewhere / "member").exists()


def test_resuming_a_finished_sweep_on_an_executor_starts_none(tmp_path, capsys, monkeypatch):
    out = tmp_path / "sweep"
    assert main(["train", "--out", str(out), *SEEDS, *QUICK]) == 0

    def refuse(*args, **kwargs):
        raise AssertionError("an executor was started for a finished sweep")

    monkeypatch.setattr("async_coagents.experiment.sweep.open_executor", refuse)
    capsys.readouterr()
    assert main(["resume", str(out), "--executor", "ray", "--no-progress"]) == 0
    assert capsys.readouterr().out.startswith(f"sweep {out}: 3 runs, 3 completed")


def test_a_cluster_without_a_node_big_enough_for_a_members_task_is_an_error():
    from async_coagents.experiment.sweep import Execution
    from async_coagents.experiment.sweep_ray import check_cpus

    nodes = [{"Alive": True, "Resources": {"CPU": 2.0}}, {"Alive": False, "Resources": {"CPU": 8.0}},
             {"Alive": True, "Resources": {}}]  # a head started with --num-cpus 0
    check_cpus(Execution("ray", cpus_per_member=2.0), nodes, private=True)
    with pytest.raises(ConfigError, match=r"no node of the cluster at head:6379 has the 4 CPUs a "
                                          r"member's task needs \(sweep.cpus_per_member\); the "
                                          "most one node offers is 2"):
        check_cpus(Execution("ray", cpus_per_member=4.0, address="head:6379"), nodes,
                   private=False)
