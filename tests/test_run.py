"""Run directories: what a run writes, bit-exact resume after an interruption (also with batches
in flight), clear errors for corrupt checkpoints, evaluation of a finished run, the command line
and Ctrl-C on a real process."""

import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

from async_coagents.checkpoint import load_checkpoint, save_checkpoint
from async_coagents.cli import main
from async_coagents.errors import CheckpointError, ConfigError, DivergedError
from async_coagents.experiment import config as cfg
from async_coagents.experiment.divergence import DivergenceCriterion
from async_coagents.experiment.run import Run, RunDirectory, evaluate_run, resume, train
from tests.regression_cases import digests


def quick_config(**overrides):
    sets = [f"{k}={v}" for k, v in {"run.updates": 120, "run.eval_every": 40,
                                    "network.hidden": "[8, 6]", **overrides}.items()]
    ((config, _),) = cfg.load("quickstart", sets)
    return config


def stopped_run(config, out, stop_after):
    """Run ``config`` into ``out`` and stop it (as Ctrl-C does) after ``stop_after`` updates."""
    directory = RunDirectory.create(out, config)
    run = Run(config, directory, progress=False)
    train_one = run._train_one

    def train_one_then_maybe_stop(batch):
        train_one(batch)
        if run.state.updates + 1 == stop_after:
            run.request_stop()

    run._train_one = train_one_then_maybe_stop
    return run.run()


def final_params(path):
    state = load_checkpoint(path / "checkpoint.ckpt", kind="run")
    layers = state["backend"]["network"]["layers"]
    return [layer["params"] for layer in layers], state


def rows_without_timing(path):
    rows = RunDirectory(path).metrics()
    return [{k: v for k, v in row.items() if k not in ("wall_s", "samples_per_s")} for row in rows]


def test_a_run_writes_config_metrics_summary_and_checkpoint(tmp_path):
    summary = train(quick_config(), tmp_path / "run", progress=False)
    files = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert files == [".lock", "checkpoint.ckpt", "config.json", "metrics.jsonl", "summary.json"]
    assert (tmp_path / "run" / ".lock").read_text() == ""  # no process holds it any more
    rows = RunDirectory(tmp_path / "run").metrics()
    assert [row["step"] for row in rows] == [0, 40, 80, 120]
    last = rows[-1]
    for key in ("step", "samples", "wall_s", "train_loss", "test_accuracy", "valid_accuracy",
                "test_ce", "entropy", "sparsity", "staleness_mean", "staleness_max"):
        assert key in last, key
    assert len(last["entropy"]) == len(last["entropy_std"]) == len(last["sparsity"]) == 2
    assert rows[0]["train_loss"] is None and last["samples"] == 120 * 32
    assert summary["status"] == "completed" and summary["samples_per_s"] > 0
    accounting = summary["accounting"]
    assert accounting["submitted"] == accounting["rewarded"] == 120
    assert accounting["in_flight"] == 0 and accounting["complete"]
    assert all(agent["applied"] == 120 and agent["unaccounted"] == 0
               for agent in accounting["agents"])
    assert summary["backend"] == "local" and len(summary["placement"]) == 3
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == summary


def test_an_existing_run_directory_is_not_overwritten(tmp_path):
    train(quick_config(), tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="already holds a run; use `coagents resume"):
        train(quick_config(), tmp_path / "run", progress=False)


@pytest.mark.parametrize("rule, window, delay", [("baseline", 1, 0), ("baseline", 4, 3),
                                                 ("input-baseline", 2, 1)])
def test_resume_after_an_interruption_is_bit_exact(tmp_path, rule, window, delay):
    """With batches in flight too; the input baseline (§3.4) saves its inputs of those batches."""
    config = quick_config(**{"network.rule": rule, "backend.window": window,
                             "backend.reward_delay": delay})
    train(config, tmp_path / "whole", progress=False)
    stopped = stopped_run(config, tmp_path / "split", stop_after=57)  # mid-interval
    assert stopped["status"] == "interrupted" and stopped["updates"] == 57
    assert stopped["accounting"]["in_flight"] == min(window - 1, delay)
    resumed = resume(tmp_path / "split", progress=False)
    assert resumed["status"] == "completed" and resumed["updates"] == 120
    whole_summary = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert resumed["train"] == whole_summary["train"]  # the run's prequential figures too
    whole, whole_state = final_params(tmp_path / "whole")
    split, split_state = final_params(tmp_path / "split")
    for a, b in zip(whole, split, strict=True):
        np.testing.assert_array_equal(a, b)
    assert rows_without_timing(tmp_path / "whole") == rows_without_timing(tmp_path / "split")
    assert whole_state["stream"] == split_state["stream"]
    assert digests(whole_state["backend"]) == digests(split_state["backend"])  # every array


def test_resume_of_a_finished_run_changes_nothing_and_says_so(tmp_path, caplog):
    train(quick_config(), tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "checkpoint.ckpt").read_bytes()
    with caplog.at_level("INFO"):
        assert resume(tmp_path / "run", progress=False)["status"] == "completed"
    assert "the run is already complete; nothing to resume" in caplog.text
    assert (tmp_path / "run" / "checkpoint.ckpt").read_bytes() == before
    (tmp_path / "run" / "summary.json").unlink()  # finished, but its summary was lost
    assert resume(tmp_path / "run", progress=False)["status"] == "completed"
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["updates"] == 120


def test_corrupt_or_missing_checkpoints_are_clear_errors(tmp_path):
    train(quick_config(), tmp_path / "run", progress=False)
    path = tmp_path / "run" / "checkpoint.ckpt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        resume(tmp_path / "run", progress=False)
    with pytest.raises(CheckpointError, match="corrupt"):
        evaluate_run(tmp_path / "run")
    path.write_bytes(b'{"not": "a checkpoint"}')
    with pytest.raises(CheckpointError, match="not an async_coagents checkpoint"):
        resume(tmp_path / "run", progress=False)
    path.unlink()
    with pytest.raises(CheckpointError, match="has no checkpoint"):
        evaluate_run(tmp_path / "run")  # resume starts such a run afresh (see test_rundir.py)
    with pytest.raises(ConfigError, match="is not a run directory"):
        resume(tmp_path / "nothing", progress=False)


def test_resume_elsewhere_applies_to_ray_runs_only(tmp_path):
    train(quick_config(), tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="--address applies to Ray runs; .* ran on the 'local' backend"):
        resume(tmp_path / "run", progress=False, address="10.0.0.10:6379")


def test_eval_reports_the_last_checkpoint(tmp_path):
    train(quick_config(), tmp_path / "run", progress=False)
    result = evaluate_run(tmp_path / "run")
    last = RunDirectory(tmp_path / "run").metrics()[-1]
    assert result["step"] == 120
    assert result["test_accuracy"] == last["test_accuracy"]
    assert result["entropy"] == pytest.approx(last["entropy"])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow is the point
def test_divergence_stops_with_a_clear_error_and_a_summary(tmp_path):
    config = quick_config(**{"network.lr": 1e30, "network.optimizer": '"sgd"',
                             "network.units": '"gaussian"', "network.sigma": 1.0})
    with pytest.raises(Exception, match="not finite"):
        train(config, tmp_path / "run", progress=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "diverged" and "lower the learning rate" in summary["error"]


def test_bench_reports_the_engine_benchmarks_as_a_table_and_json(tmp_path, capsys, monkeypatch):
    """`coagents bench` runs and reports (figures are printed, never asserted: no timed tests)."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, "1")  # what `coagents bench` sets; monkeypatch puts it back
    assert main(["bench", "--quick", "--only", "engine", "--json", str(tmp_path / "b.json")]) == 0
    table = capsys.readouterr().out
    assert "correlated-engine" in table and "mnist-offpolicy-engine" in table
    results = json.loads((tmp_path / "b.json").read_text())
    assert [r["name"] for r in results["results"]] == ["correlated-engine",
                                                       "mnist-offpolicy-engine"]
    assert "correlated_vs_paper_code" not in results["summary"]  # not like for like: not printed


# ---- command line ---------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["train", "resume", "eval", "plot", "configs", "datasets",
                                     "bench", "demo"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: coagents" in capsys.readouterr().out


def test_cli_train_eval_and_plot(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--no-progress", "--set", "run.updates=60",
                 "--set", "run.eval_every=20"]) == 0
    assert "quickstart: completed after 60 updates" in capsys.readouterr().out
    assert main(["eval", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 60
    assert main(["plot", str(out)]) == 0
    written = capsys.readouterr().out.split()
    assert any(p.endswith("learning_curves.png") for p in written)
    assert (out / "plots" / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_interrupted_run_stops_its_sweep_and_says_how_to_continue(tmp_path, capsys,
                                                                     monkeypatch):
    started = []

    def interrupted_train(config, target, **_):
        started.append(target)
        return {"name": config["name"], "status": "interrupted", "updates": 7}

    monkeypatch.setattr("async_coagents.experiment.run.train", interrupted_train)
    assert main(["train", "--out", str(tmp_path / "sweep"), "--set", "run.seed=[0,1,2]"]) == 130
    out = capsys.readouterr().out
    assert len(started) == 1 and f"coagents resume {tmp_path / 'sweep'}" in out
    assert "the sweep stopped: 2 of its 3 runs did not start" in out


def test_cli_reports_bad_input_without_a_traceback(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "x"), "--set", "network.lr=-1"]) == 1
    err = capsys.readouterr().err
    assert "coagents train: error:" in err and "network.lr must be > 0" in err
    assert "Traceback" not in err


def test_cli_lists_configs_and_datasets(capsys):
    assert main(["configs"]) == 0
    listing = capsys.readouterr().out
    assert "quickstart" in listing and "correlated-pg-d95" in listing
    assert main(["configs", "quickstart"]) == 0
    assert 'name = "quickstart"' in capsys.readouterr().out
    assert main(["configs", "--schema"]) == 0
    assert "[backend]" in capsys.readouterr().out
    assert main(["datasets"]) == 0
    assert "multiplexer" in capsys.readouterr().out


@pytest.mark.parametrize("backend, updates, signum", [("local", 12000, signal.SIGINT),
                                                      ("ray", 1500, signal.SIGINT),
                                                      ("local", 12000, signal.SIGTERM)])
def test_ctrl_c_or_sigterm_then_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path, backend,
                                                                                updates, signum):
    """End to end with real processes: SIGINT at an arbitrary moment to the whole process group, as
    a terminal's Ctrl-C sends it (on Ray, the run's own Ray processes get it too), or SIGTERM, as
    `kill` and `ray job stop` send it; then `coagents resume`; the result equals an uninterrupted
    run."""
    sets = ["--set", f"run.updates={updates}", "--set", "run.eval_every=500", "--no-progress"]
    cmd = [sys.executable, "-m", "async_coagents.cli", "train"]
    subprocess.run([*cmd, "--out", str(tmp_path / "whole"), *sets], check=True,
                   capture_output=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([*cmd, "--out", str(tmp_path / "split"), "--backend", backend, *sets],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    metrics = tmp_path / "split" / "metrics.jsonl"
    deadline = time.time() + 600  # generous: a loaded 2-core machine starts Ray slowly
    while proc.poll() is None and (not metrics.exists() or
                                   len(metrics.read_text().splitlines()) < 2):
        assert time.time() < deadline, "the run wrote no evaluation after step 0 in 10 minutes"
        time.sleep(0.02)
    if proc.poll() is None:
        os.killpg(proc.pid, signum)
    out, err = proc.communicate(timeout=120)
    summary = json.loads((tmp_path / "split" / "summary.json").read_text())
    if summary["status"] == "completed":
        pytest.skip("the run finished before the signal arrived (machine too fast)")
    assert proc.returncode == 130, err.decode()
    assert f"coagents resume {tmp_path / 'split'}" in out.decode()
    assert summary["status"] == "interrupted" and 0 < summary["updates"] < updates
    assert summary["backend"] == backend and summary["accounting"]["complete"]
    subprocess.run([sys.executable, "-m", "async_coagents.cli", "resume",
                    str(tmp_path / "split"), "--no-progress"], check=True, capture_output=True)
    assert json.loads((tmp_path / "split" / "summary.json").read_text())["status"] == "completed"
    whole, _ = final_params(tmp_path / "whole")
    split, _ = final_params(tmp_path / "split")
    for a, b in zip(whole, split, strict=True):
        np.testing.assert_array_equal(a, b)


# ---- divergence (issue 9 item 4) -----------------------------------------------------------
def _diverging_cli_run(tmp_path, capsys, config, *sets):
    """``coagents train`` of a diverging config with every warning an error: exit code, summary
    and what the terminal got."""
    out = tmp_path / "run"
    args = ["train", config, "--out", str(out), "--no-progress"]
    for assignment in sets:
        args += ["--set", assignment]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a numpy overflow warning fails the test
        code = main(args)
    captured = capsys.readouterr()
    return code, json.loads((out / "summary.json").read_text()), captured


@pytest.mark.parametrize("config, sets", [
    ("quickstart", ("network.lr=1e30", "run.updates=60", "run.eval_every=20")),
    # losses of 1e6 to 4e15 that used to end `completed` (a Gaussian regression, lr far too big)
    ("correlated-pg-d0", ("network.lr=100", "run.updates=200", "run.eval_every=50")),
])
def test_a_diverging_run_ends_diverged_with_its_update_and_loss_and_no_warnings(
        tmp_path, capsys, config, sets):
    code, summary, captured = _diverging_cli_run(tmp_path, capsys, config, *sets)
    assert code != 0
    assert summary["status"] == "diverged"
    update, loss = summary["diverged"]["update"], summary["diverged"]["loss"]
    assert 1 <= update < int(sets[1].split("=")[1])
    assert not math.isfinite(loss) or loss > 1e6
    assert f"diverged at update {update}" in summary["error"]
    assert f"diverged at update {update}" in captured.err and "Traceback" not in captured.err
    assert f"diverged after {update - 1} updates" in captured.out and str(tmp_path) in captured.out
    assert "Warning" not in captured.err + captured.out


def test_diverge_factor_zero_keeps_only_the_non_finite_test(tmp_path):
    ((config, _),) = cfg.load("correlated-pg-d0", ["network.lr=100", "run.updates=200",
                                                   "run.eval_every=50", "run.diverge_factor=0"])
    summary = train(config, tmp_path / "run", progress=False)
    assert summary["status"] == "completed" and summary["final"]["test_mse"] > 1e6


def test_the_divergence_limit_ignores_a_step_0_loss_of_zero_or_nan():
    assert DivergenceCriterion(1000.0, 0.0).limit == 1e6
    assert DivergenceCriterion(1000.0, float("nan")).limit == 1e6
    assert DivergenceCriterion(1000.0, None).limit == 1e6
    assert DivergenceCriterion(1000.0, 5e3).limit == 5e6
    assert DivergenceCriterion(0.0, 5e3).limit == math.inf
    DivergenceCriterion(1000.0, 2.3).check(7, 6, 1e6)  # at the limit: not divergence
    with pytest.raises(DivergedError, match="update 7: the training loss of batch 6 is 1e\\+06"):
        DivergenceCriterion(1000.0, 2.3).check(7, 6, 1.000001e6)
    with pytest.raises(DivergedError, match="is nan, which is not finite") as info:
        DivergenceCriterion(0.0, 2.3).check(3, 2, float("nan"))
    assert info.value.update == 3


def test_a_run_written_before_run_diverge_factor_existed_still_resumes(tmp_path):
    config = quick_config()
    stopped_run(config, tmp_path / "run", stop_after=50)
    path = tmp_path / "run" / "checkpoint.ckpt"
    state = load_checkpoint(path, kind="run")
    del state["config"]["run"]["diverge_factor"]  # as an older version wrote it
    save_checkpoint(path, state, kind="run")
    written = json.loads((tmp_path / "run" / "config.json").read_text())
    del written["run"]["diverge_factor"]
    (tmp_path / "run" / "config.json").write_text(json.dumps(written))
    assert resume(tmp_path / "run", progress=False)["status"] == "completed"


def test_the_summary_holds_the_whole_runs_test_then_train_loss_and_accuracy(tmp_path):
    """Every batch's loss and hits as predicted before the network learnt from it: with a
    categorical output rewarded +1/-1 the mean reward is 2 accuracy - 1, and the interval means of
    metrics.jsonl average to the whole-run mean."""
    config = quick_config(**{"network.output": '"categorical"', "run.updates": 200})
    summary = train(config, tmp_path / "run", progress=False)
    train_figures = summary["train"]
    assert train_figures["batches"] == 200 and train_figures["since"] == 0
    assert 0.0 < train_figures["accuracy"] < 1.0
    assert math.isclose(-train_figures["loss_mean"], 2 * train_figures["accuracy"] - 1)
    rows = RunDirectory(tmp_path / "run").metrics()
    steps = [row["step"] for row in rows]
    weighted = sum(row["train_loss"] * (b - a)
                   for row, a, b in zip(rows[1:], steps, steps[1:], strict=False))
    assert math.isclose(weighted / 200, train_figures["loss_mean"])


def test_a_checkpoint_without_the_prequential_counters_resumes_and_says_from_when(tmp_path):
    config = quick_config()
    stopped_run(config, tmp_path / "run", stop_after=50)
    path = tmp_path / "run" / "checkpoint.ckpt"
    state = load_checkpoint(path, kind="run")
    for key in ("loss_total", "loss_batches_total", "hits_total", "examples_total",
                "totals_since"):
        del state["progress"][key]  # as a version before they existed wrote it
    save_checkpoint(path, state, kind="run")
    summary = resume(tmp_path / "run", progress=False)
    assert summary["status"] == "completed"
    assert summary["train"]["since"] == 50 and summary["train"]["batches"] == 70
