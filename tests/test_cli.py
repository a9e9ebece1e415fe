"""The command line as a user meets it (issue 9 item 13): ``--data-dir`` on ``eval`` and
``resume``, the "continue with" hint after a second Ctrl-C, a closed pipe, and option errors shown
with the subcommand's usage."""

import json
import os
import subprocess
import sys

import pytest

from async_coagents.cli import main
from async_coagents.experiment.run import Run


def test_eval_and_resume_take_data_dir(tmp_path, capsys, monkeypatch, fashion_mnist):
    data_dir = os.environ["COAGENTS_DATA_DIR"]  # where the fixture found Fashion-MNIST
    out = tmp_path / "run"
    assert main(["train", "fashion-baseline", "--out", str(out), "--no-progress",
                 "--set", "run.updates=20", "--set", "run.eval_every=10",
                 "--set", "run.epochs=0"]) == 0
    monkeypatch.delenv("COAGENTS_DATA_DIR")
    monkeypatch.setattr("async_coagents.data.datasets.SYSTEM_ROOT", tmp_path / "none")
    capsys.readouterr()
    assert main(["eval", str(out)]) == 1  # the data is nowhere it looks
    assert "--data-dir" in capsys.readouterr().err
    assert main(["eval", str(out), "--data-dir", data_dir]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 20
    (out / "summary.json").unlink()  # resume must rebuild the run, which needs the data
    assert main(["resume", str(out), "--data-dir", data_dir, "--no-progress"]) == 0
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"


def test_a_second_ctrl_c_says_how_to_continue_the_run(tmp_path, capsys, monkeypatch):
    train_one = Run._train_one

    def interrupted(self, batch):
        if self.state.updates == 30:
            raise KeyboardInterrupt  # what the run's handler raises on a second signal
        train_one(self, batch)

    monkeypatch.setattr(Run, "_train_one", interrupted)
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--no-progress", "--set", "run.updates=60",
                 "--set", "run.eval_every=20"]) == 130
    assert f"continue it with: coagents resume {out}" in capsys.readouterr().out
    assert main(["resume", str(out), "--no-progress"]) == 130  # stopped at update 30 again
    assert f"continue it with: coagents resume {out}" in capsys.readouterr().out


@pytest.mark.parametrize("unbuffered", ["", "1"])
def test_a_closed_pipe_ends_quietly(unbuffered):
    """`coagents configs --schema | head -1`: the reader is gone before the output is written
    (buffered, the write fails at the last flush; unbuffered, in print)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = unbuffered
    proc = subprocess.Popen([sys.executable, "-m", "async_coagents.cli", "configs", "--schema"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # nobody reads: writing fails with EPIPE
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert proc.returncode == 1


@pytest.mark.parametrize("command", [["train", "--bogus"], ["eval", "somewhere", "--bogus"],
                                     ["resume", "somewhere", "--bogus", "1"]])
def test_an_unknown_option_shows_the_usage_of_its_subcommand(command, capsys):
    with pytest.raises(SystemExit) as info:
        main(command)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: coagents {command[0]} ")
    assert "unrecognized arguments: --bogus" in err


def test_every_command_runs_numpy_on_one_blas_thread_unless_told_otherwise():
    """A multi-threaded BLAS gives other last bits for large products, so the CLI pins one
    thread before numpy loads (a user's own setting wins)."""
    code = ("import async_coagents.cli, os, sys; "
            "print(os.environ['OPENBLAS_NUM_THREADS'], 'numpy' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k not in
           ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["1", "False"]  # set, and before numpy was imported
    mine = subprocess.run([sys.executable, "-c", code], env={**env, "OPENBLAS_NUM_THREADS": "3"},
                          capture_output=True, text=True, check=True).stdout.split()
    assert mine[0] == "3"
