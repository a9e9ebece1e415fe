"""The run directory: where a run may be written (--out rules), unique default directories and
temporary files, the lock held while a run trains or resumes, eval and resume reading the
checkpoint through one check (its config, its structure), eval without a backend, resume of a run
without checkpoint and after a partial metrics line."""

import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from async_coagents import cli
from async_coagents.checkpoint import load_checkpoint, save_checkpoint
from async_coagents.errors import CheckpointError, ConfigError
from async_coagents.experiment import config as cfg
from async_coagents.experiment import run as run_module
from async_coagents.experiment.run import RunDirectory, evaluate_run, resume, train
from tests.test_run import final_params, quick_config, rows_without_timing, stopped_run


def snapshot(root):
    """Every path under ``root`` with its bytes (None for a directory)."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes()
            for p in sorted(root.rglob("*"))}


def rewrite_checkpoint(run_dir, change):
    """Apply ``change`` to the decoded run checkpoint and save it again (valid length and CRC)."""
    path = run_dir / "checkpoint.ckpt"
    state = load_checkpoint(path, kind="run")
    change(state)
    save_checkpoint(path, state, kind="run")


# ---- item 1: --out -----------------------------------------------------------------------------
def test_out_at_a_non_empty_directory_that_is_not_a_run_is_refused_and_left_untouched(tmp_path):
    out = tmp_path / "mine"
    (out / "sub").mkdir(parents=True)
    (out / "metrics.jsonl").write_text('{"my": "own metrics"}\n')
    (out / "notes.txt").write_text("my notes")
    (out / "sub" / "data.csv").write_text("1,2\n")
    before = snapshot(out)
    with pytest.raises(ConfigError, match=f"{out} is not empty and is not a run directory"):
        train(quick_config(), out, progress=False)
    assert snapshot(out) == before


def test_out_at_a_directory_whose_config_json_is_not_ours_is_refused(tmp_path):
    out = tmp_path / "other"
    out.mkdir()
    (out / "config.json").write_text('{"model": "resnet"}')
    before = snapshot(out)
    with pytest.raises(ConfigError, match="its config.json is not a config of this project"):
        train(quick_config(), out, progress=False)
    assert snapshot(out) == before


def test_out_that_is_a_file_or_below_a_file_is_a_clear_error(tmp_path, capsys):
    a_file = tmp_path / "results.txt"
    a_file.write_text("keep me")
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        train(quick_config(), a_file, progress=False)
    with pytest.raises(ConfigError, match="cannot create the run directory"):
        train(quick_config(), a_file / "run", progress=False)
    assert cli.main(["train", "--out", str(a_file), "--set", "run.updates=10"]) == 1
    err = capsys.readouterr().err
    assert "coagents train: error:" in err and "Traceback" not in err
    assert a_file.read_text() == "keep me" and sorted(os.listdir(tmp_path)) == ["results.txt"]


def test_an_empty_out_directory_takes_the_run(tmp_path):
    (tmp_path / "empty").mkdir()
    assert train(quick_config(), tmp_path / "empty", progress=False)["status"] == "completed"


def test_a_run_that_cannot_start_leaves_nothing_behind(tmp_path):
    with pytest.raises(ConfigError, match="pretrain_updates"):  # refused while the run is built
        train(quick_config(**{"run.pretrain_updates": 500}), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_full_disk_when_the_run_starts_is_a_clear_error_leaving_nothing(tmp_path, monkeypatch):
    def full_disk(path, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("async_coagents.experiment.rundir.write_text", full_disk)
    with pytest.raises(ConfigError, match="cannot write in the run directory .*No space left"):
        train(quick_config(), tmp_path / "run", progress=False)
    assert os.listdir(tmp_path) == []


# ---- item 2: unique directories and temporary files, the lock ----------------------------------
def test_default_directories_of_commands_started_in_the_same_second_differ(tmp_path,
                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli.time, "strftime", lambda fmt: "20260101-120000")
    first, second = cli._new_run_dir("quickstart"), cli._new_run_dir("quickstart")
    assert first != second
    assert os.path.isdir(first) and os.path.isdir(second) and not os.listdir(second)
    assert cli.main(["train", "--no-progress", "--set", "run.updates=20",
                     "--set", "run.eval_every=10"]) == 0
    assert sorted(os.listdir(tmp_path / "runs")) == ["quickstart-20260101-120000",
                                                     "quickstart-20260101-120000-2",
                                                     "quickstart-20260101-120000-3"]
    assert (tmp_path / "runs" / "quickstart-20260101-120000-3" / "checkpoint.ckpt").exists()


def test_temporary_files_are_unique_per_writer(tmp_path):
    """Another writer's temporary file, mid-write, is neither overwritten nor renamed away."""
    from async_coagents.experiment.rundir import write_json

    theirs = tmp_path / ".config.json.tmp"
    theirs.write_text("another writer's half-written config")
    write_json(tmp_path / "config.json", {"mine": 1})
    assert json.loads((tmp_path / "config.json").read_text()) == {"mine": 1}
    assert theirs.read_text() == "another writer's half-written config"
    assert sorted(os.listdir(tmp_path)) == [".config.json.tmp", "config.json"]


def test_a_run_directory_is_locked_while_a_process_trains_or_resumes_it(tmp_path):
    config = quick_config()
    stopped_run(config, tmp_path / "run", stop_after=57)
    metrics_before = (tmp_path / "run" / "metrics.jsonl").read_bytes()
    with RunDirectory(tmp_path / "run").lock():  # as a process training it would hold it
        with pytest.raises(ConfigError, match=f"is in use: process {os.getpid()} is training"):
            resume(tmp_path / "run", progress=False)
        proc = subprocess.run([sys.executable, "-m", "async_coagents.cli", "resume",
                               str(tmp_path / "run"), "--no-progress"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1 and f"in use: process {os.getpid()}" in proc.stderr
        assert "Traceback" not in proc.stderr
        (tmp_path / "new").mkdir()
        with RunDirectory(tmp_path / "new").lock(), pytest.raises(ConfigError, match="is in use"):
            train(config, tmp_path / "new", progress=False)
        assert os.listdir(tmp_path / "new") == [".lock"]
    assert (tmp_path / "run" / "metrics.jsonl").read_bytes() == metrics_before
    assert resume(tmp_path / "run", progress=False)["status"] == "completed"  # released


# ---- items 3 and 7: eval reads the checkpoint as resume does, and starts no backend ------------
def test_eval_refuses_another_runs_checkpoint_as_resume_does(tmp_path):
    train(quick_config(), tmp_path / "seed0", progress=False)
    train(quick_config(**{"run.seed": 1}), tmp_path / "seed1", progress=False)
    (tmp_path / "seed0" / "checkpoint.ckpt").write_bytes(
        (tmp_path / "seed1" / "checkpoint.ckpt").read_bytes())
    (tmp_path / "seed0" / "summary.json").unlink()
    with pytest.raises(CheckpointError, match="was written by another config"):
        resume(tmp_path / "seed0", progress=False)
    with pytest.raises(CheckpointError, match="was written by another config"):
        evaluate_run(tmp_path / "seed0")


def as_ray_run_on_a_gone_cluster(run_dir):
    """Make a local run look like a Ray run whose cluster no longer exists."""
    def to_ray(config):
        config["backend"] = {**config["backend"], "kind": "ray", "address": "127.0.0.1:9"}

    config = json.loads((run_dir / "config.json").read_text())
    to_ray(config)
    (run_dir / "config.json").write_text(json.dumps(config))
    rewrite_checkpoint(run_dir, lambda state: to_ray(state["config"]))


def test_eval_of_a_ray_run_whose_cluster_is_gone_starts_no_backend(tmp_path, monkeypatch):
    train(quick_config(), tmp_path / "run", progress=False)
    expected = evaluate_run(tmp_path / "run")
    as_ray_run_on_a_gone_cluster(tmp_path / "run")

    def no_backend(*args, **kwargs):
        raise AssertionError("eval started a backend")

    monkeypatch.setattr(run_module, "make_backend", no_backend)
    assert evaluate_run(tmp_path / "run") == expected
    code = ("import sys; from async_coagents.experiment.run import evaluate_run; "
            f"print(evaluate_run({str(tmp_path / 'run')!r})['step'], 'ray' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["120", "False"]  # evaluated, and ray never imported


# ---- item 11: a run without checkpoint ---------------------------------------------------------
@pytest.mark.parametrize("with_first_row", [False, True])
def test_resume_of_a_run_without_checkpoint_starts_from_the_beginning(tmp_path, caplog,
                                                                      with_first_row):
    config = quick_config(**{"backend.window": 4, "backend.reward_delay": 3})
    train(config, tmp_path / "whole", progress=False)
    RunDirectory.create(tmp_path / "cut", config)  # killed before its first checkpoint
    if with_first_row:
        first = (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()[0]
        (tmp_path / "cut" / "metrics.jsonl").write_text(first + "\n")
    with caplog.at_level("INFO"):
        summary = resume(tmp_path / "cut", progress=False)
    assert "has no checkpoint yet: starting the run from the beginning" in caplog.text
    assert summary["status"] == "completed" and summary["updates"] == 120
    for a, b in zip(final_params(tmp_path / "whole")[0], final_params(tmp_path / "cut")[0],
                    strict=True):
        np.testing.assert_array_equal(a, b)
    assert rows_without_timing(tmp_path / "whole") == rows_without_timing(tmp_path / "cut")


# ---- item 12: a partial last metrics line ------------------------------------------------------
def test_resume_drops_a_partial_last_metrics_line_and_stays_bit_exact(tmp_path, caplog):
    config = quick_config(**{"backend.window": 4, "backend.reward_delay": 3,
                             "run.checkpoint_every": 20})
    train(config, tmp_path / "whole", progress=False)
    stopped_run(config, tmp_path / "split", stop_after=57)
    with open(tmp_path / "split" / "metrics.jsonl", "a") as f:
        f.write('{"step": 80, "samples": 25')  # SIGKILL or a full disk mid-write
    with caplog.at_level("INFO"):
        assert resume(tmp_path / "split", progress=False)["status"] == "completed"
    assert "dropped a partial last line" in caplog.text
    for a, b in zip(final_params(tmp_path / "whole")[0], final_params(tmp_path / "split")[0],
                    strict=True):
        np.testing.assert_array_equal(a, b)
    assert rows_without_timing(tmp_path / "whole") == rows_without_timing(tmp_path / "split")


def test_a_corrupt_metrics_line_before_the_last_is_a_clear_error(tmp_path):
    stopped_run(quick_config(), tmp_path / "run", stop_after=57)
    path = tmp_path / "run" / "metrics.jsonl"
    path.write_text("not json\n" + path.read_text())
    with pytest.raises(CheckpointError, match="metrics.jsonl, line 1: not an evaluation row"):
        resume(tmp_path / "run", progress=False)


# ---- item 15: CRC-valid checkpoints with missing or mistyped entries ---------------------------
def _set(path, value):
    def change(state):
        *parents, last = path
        for key in parents:
            state = state[key]
        if value is KeyError:
            del state[last]
        else:
            state[last] = value
    return change


@pytest.mark.parametrize("path, value, named", [
    (("progress", "updates"), -5, "entry progress.updates must be a non-negative integer"),
    (("progress", "updates"), 2.5, "entry progress.updates must be a non-negative integer"),
    (("progress", "updates"), "57", "entry progress.updates must be a non-negative integer"),
    (("progress", "updates"), 10**9, "progress.updates = 1000000000 exceeds the run's 120"),
    (("progress", "switched"), KeyError, "entry progress.switched is missing"),
    (("backend", "network", "layers", 0, "params"), KeyError,
     r"entry backend.network.layers\[0\].params is missing"),
    (("backend", "network", "layers", 1, "optimizer", "steps"), None,
     r"entry backend.network.layers\[1\].optimizer.steps must be a non-negative integer"),
    (("backend", "network", "layers", 0, "params"), np.zeros(3, np.float32),
     r"checkpoint.ckpt: layer0 has 3 parameters in the checkpoint"),
    (("backend", "network", "layers"), {}, "entry backend.network.layers must be a list"),
    (("backend", "coordinator", "forwards"), -1, "entry backend.coordinator.forwards"),
])
def test_checkpoints_with_missing_or_mistyped_entries_are_clear_errors_in_resume_and_eval(
        tmp_path, path, value, named):
    stopped_run(quick_config(), tmp_path / "run", stop_after=57)
    rewrite_checkpoint(tmp_path / "run", _set(path, value))
    with pytest.raises(CheckpointError, match=named):
        resume(tmp_path / "run", progress=False)
    with pytest.raises(CheckpointError, match=named):
        evaluate_run(tmp_path / "run")


@pytest.mark.parametrize("path, value, named, in_eval", [
    (("backend", "network", "layers", 0, "pending", 0, 1, "x"), np.zeros((32, 5), np.float32),
     r"layer0: batch \d+ in flight: input must be a float32 array of shape \(B, 6\)", True),
    (("backend", "network", "layers", 1, "pending", 0, 1, "cache", 0), np.zeros(3, np.float32),
     r"layer1: batch \d+ in flight: cache\[0\] must be a float32 array of shape \(32, 8\)", True),
    (("backend", "network", "layers", 0, "pending", 0, 1, "action"), np.full((32, 8), 7),
     r"layer0: batch \d+ in flight: actions must lie in \[0, 2\), got 7..7", True),
    (("backend", "network", "layers", 0, "rng", "state", "state"), -1,
     "invalid layer0 sampling stream state", True),
    (("backend", "network", "layers", 2, "optimizer", "v"), np.zeros(14, np.float64),
     "optimizer 'v' is a float64 array", True),
    (("backend", "coordinator", "inflight", 0, "y"), np.full(32, 9),
     r"coordinator: batch \d+ in flight: labels must lie in \[0, 2\)", False),
])
def test_checkpoints_whose_batches_in_flight_do_not_fit_the_network_are_clear_errors(
        tmp_path, path, value, named, in_eval):
    """Entries of the right type whose arrays do not fit the network (shape, dtype, values) are
    refused by the objects that restore them, before any is used."""
    config = quick_config(**{"backend.window": 4, "backend.reward_delay": 3})
    stopped_run(config, tmp_path / "run", stop_after=57)
    rewrite_checkpoint(tmp_path / "run", _set(path, value))
    with pytest.raises(CheckpointError, match=f"checkpoint.ckpt: .*{named}"):
        resume(tmp_path / "run", progress=False)
    if in_eval:
        with pytest.raises(CheckpointError, match=named):
            evaluate_run(tmp_path / "run")


@pytest.mark.parametrize("stop_after", [30, 80])  # during the backprop pre-training, after it
def test_eval_and_resume_of_a_run_with_pretraining(tmp_path, stop_after):
    ((config, _),) = cfg.load("correlated-pg-d95", [
        "run.updates=120", "run.eval_every=40", "run.pretrain_updates=50", "data.means=4",
        "data.segments=40", "network.hidden=[6]"])
    train(config, tmp_path / "whole", progress=False)
    stopped_run(config, tmp_path / "split", stop_after=stop_after)
    assert evaluate_run(tmp_path / "split")["step"] == stop_after
    rewrite_checkpoint(tmp_path / "split", _set(("pretrain",), None))
    with pytest.raises(CheckpointError, match="entry pretrain is missing, but the run pre-trains"):
        if stop_after < 50:  # eval needs the pre-training twin only before the switch
            evaluate_run(tmp_path / "split")
        else:
            resume(tmp_path / "split", progress=False)
    stopped_run(config, tmp_path / "again", stop_after=stop_after)
    assert resume(tmp_path / "again", progress=False)["status"] == "completed"
    assert evaluate_run(tmp_path / "again") == evaluate_run(tmp_path / "whole")
    for a, b in zip(final_params(tmp_path / "whole")[0], final_params(tmp_path / "again")[0],
                    strict=True):
        np.testing.assert_array_equal(a, b)
