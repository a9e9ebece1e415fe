"""Sweeps (issue 9 items 9 and 10): a failed member does not stop its sweep, every member ends
with its status, the closing summary lists them all, ``sweep.json`` records them, and an
interrupted sweep continues with ``coagents resume SWEEP_DIR`` or the same ``coagents train``."""

import json

import pytest

from async_coagents.cli import main
from async_coagents.errors import ConfigError, DataError
from async_coagents.experiment import config as cfg
from async_coagents.experiment.run import Run
from async_coagents.experiment.sweep import MANIFEST, Sweep

QUICK = ["--set", "run.updates=60", "--set", "run.eval_every=20", "--no-progress"]
SEEDS = ["--set", "run.seed=[0,1,2]"]


def member_dirs(out):
    return sorted(p for p in out.iterdir() if p.is_dir())


def statuses(out):
    return [m["status"] for m in json.loads((out / MANIFEST).read_text())["members"]]


def test_a_diverged_member_does_not_stop_the_sweep_and_the_summary_lists_every_member(
        tmp_path, capsys):
    out = tmp_path / "sweep"
    code = main(["train", "--out", str(out), "--set", "network.lr=[0.001, 1e30, 0.01]", *QUICK])
    text = capsys.readouterr().out
    assert code == 1  # a member failed
    assert statuses(out) == ["completed", "diverged", "completed"]
    dirs = member_dirs(out)
    assert len(dirs) == 3
    for status, directory in zip(["completed", "diverged", "completed"], dirs, strict=True):
        assert json.loads((directory / "summary.json").read_text())["status"] == status
    summary = text[text.index(f"sweep {out}: 3 runs"):]
    assert "2 completed, 1 diverged" in summary
    for directory, status in zip(dirs, ["completed", "diverged", "completed"], strict=True):
        assert any(status in line and str(directory) in line for line in summary.splitlines())
    assert "diverged at update" in summary and "network.lr=1e+30" in summary
    manifest = json.loads((out / MANIFEST).read_text())
    assert [m["directory"] for m in manifest["members"]] == [d.name for d in dirs]
    assert [m["point"] for m in manifest["members"]] == [{"network.lr": v}
                                                        for v in (0.001, 1e30, 0.01)]


def test_a_member_that_fails_is_recorded_with_its_error_and_the_sweep_goes_on(
        tmp_path, capsys, monkeypatch):
    from async_coagents.experiment import run

    real_train = run.train

    def train(config, target, **kwargs):
        if config["run"]["seed"] == 1:
            raise DataError("no fashion-mnist here (looked in nowhere)")
        return real_train(config, target, **kwargs)

    monkeypatch.setattr(run, "train", train)
    out = tmp_path / "sweep"
    assert main(["train", "--out", str(out), *SEEDS, *QUICK]) == 1
    text = capsys.readouterr().out
    assert statuses(out) == ["completed", "failed", "completed"]
    assert "no fashion-mnist here" in text and f"continue with: coagents resume {out}" in text
    members = json.loads((out / MANIFEST).read_text())["members"]
    assert members[1]["error"] == "no fashion-mnist here (looked in nowhere)"
    monkeypatch.setattr(run, "train", real_train)  # the data is found now: resume starts it
    assert main(["resume", str(out), "--no-progress"]) == 0
    assert statuses(out) == ["completed"] * 3


def _stop_seed_1_after(monkeypatch, updates):
    """Seed 1 stops (as on Ctrl-C) after ``updates`` updates."""
    train_one = Run._train_one

    def stopping(self, batch):
        train_one(self, batch)
        if self.config["run"]["seed"] == 1 and self.state.updates + 1 == updates:
            self.request_stop()

    monkeypatch.setattr(Run, "_train_one", stopping)


@pytest.mark.parametrize("how", ["resume", "train again"])
def test_an_interrupted_sweep_continues_where_it_stopped(tmp_path, capsys, monkeypatch, how):
    out = tmp_path / "sweep"
    command = ["train", "--out", str(out), *SEEDS, *QUICK]
    with monkeypatch.context() as patch:
        _stop_seed_1_after(patch, 30)
        assert main(command) == 130
    text = capsys.readouterr().out
    assert statuses(out) == ["completed", "interrupted", "pending"]
    assert "the sweep stopped: 1 of its 3 runs did not start" in text
    assert f"continue with: coagents resume {out}" in text
    first, _ = member_dirs(out)  # the third member never started
    finished = (first / "checkpoint.ckpt").read_bytes()
    again = ["resume", str(out), "--no-progress"] if how == "resume" else command
    assert main(again) == 0
    text = capsys.readouterr().out
    assert statuses(out) == ["completed"] * 3
    assert "3 runs, 3 completed" in text and "continue with" not in text
    assert (first / "checkpoint.ckpt").read_bytes() == finished  # skipped, not run again
    for directory in member_dirs(out):
        summary = json.loads((directory / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["updates"] == 60
        rows = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
        assert [row["step"] for row in rows] == [0, 20, 40, 60]


def test_a_second_ctrl_c_stops_the_sweep_and_says_how_to_continue(tmp_path, capsys,
                                                                   monkeypatch):
    train_one = Run._train_one

    def interrupted(self, batch):
        if self.config["run"]["seed"] == 1 and self.state.updates == 10:
            raise KeyboardInterrupt  # what the run's handler raises on a second signal
        train_one(self, batch)

    monkeypatch.setattr(Run, "_train_one", interrupted)
    out = tmp_path / "sweep"
    assert main(["train", "--out", str(out), *SEEDS, *QUICK]) == 130
    text = capsys.readouterr().out
    assert statuses(out) == ["completed", "interrupted", "pending"]
    assert f"continue with: coagents resume {out}" in text


def test_a_sweep_directory_holding_another_sweep_or_other_files_is_refused(tmp_path):
    runs = cfg.load("quickstart", ["run.updates=60", "run.seed=[0,1]"])
    Sweep.plan(tmp_path / "sweep", runs)
    other = cfg.load("quickstart", ["run.updates=80", "run.seed=[0,1]"])
    with pytest.raises(ConfigError, match=r"holds another sweep: .* \(differs in run.updates\)"):
        Sweep.plan(tmp_path / "sweep", other)
    with pytest.raises(ConfigError, match=r"holds another sweep \(2 runs, this command has 3\)"):
        Sweep.plan(tmp_path / "sweep", cfg.load("quickstart", ["run.updates=60",
                                                               "run.seed=[0,1,2]"]))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="is not empty and holds no sweep.json"):
        Sweep.plan(tmp_path / "mine", runs)
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]
    (tmp_path / "old" / "quickstart-000-seed0").mkdir(parents=True)  # a sweep without sweep.json
    (tmp_path / "old" / "quickstart-000-seed0" / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"it holds runs, quickstart-000-seed0: .*`coagents "
                                          r"resume RUN_DIR`"):
        Sweep.plan(tmp_path / "old", runs)
    (tmp_path / "sweep" / MANIFEST).write_text("{not json")
    with pytest.raises(ConfigError, match="sweep.json cannot be read"):
        Sweep.open(tmp_path / "sweep")


def test_resuming_a_finished_sweep_runs_nothing_and_lists_every_member(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["train", "--out", str(out), *SEEDS, *QUICK]) == 0
    before = {d.name: (d / "checkpoint.ckpt").read_bytes() for d in member_dirs(out)}
    capsys.readouterr()
    assert main(["resume", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"sweep {out}: 3 runs, 3 completed")  # no run printed: none ran
    assert all(str(d) in text for d in member_dirs(out))
    assert before == {d.name: (d / "checkpoint.ckpt").read_bytes() for d in member_dirs(out)}


def test_the_closing_summary_gives_the_first_line_of_a_long_error(tmp_path, capsys, monkeypatch):
    from async_coagents.experiment import run

    def train(config, target, **kwargs):
        raise DataError("dataset 'fashion-mnist' not found. Looked in:\n  - nowhere")

    monkeypatch.setattr(run, "train", train)
    out = tmp_path / "sweep"
    assert main(["train", "--out", str(out), *SEEDS, *QUICK]) == 1
    text = capsys.readouterr().out
    summary = text[text.index(f"sweep {out}: 3 runs, 3 failed"):]
    assert summary.count("not found. Looked in:") == 3 and "nowhere" not in summary
    assert text.count("nowhere") == 3  # each member's own line has the whole error
