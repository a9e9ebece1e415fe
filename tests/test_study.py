"""The reproduction study (``coagents study``): Welch's test against known values, a study's
quick budget end to end with its report written from the compact results (each number of its
table is the one the run directories give), and resumption from the compact results alone."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from async_coagents.cli import main
from async_coagents.experiment.results import group_runs, load_runs
from async_coagents.study import compact, get
from async_coagents.study.welch import student_t_two_sided, welch


def test_student_t_tail_matches_tables():
    assert student_t_two_sided(2.228138851986, 10) == pytest.approx(0.05, abs=1e-12)
    assert student_t_two_sided(12.706204736, 1) == pytest.approx(0.05, abs=1e-10)
    assert student_t_two_sided(0.0, 5) == 1.0


def test_welch_matches_a_hand_computation():
    test = welch([1, 2, 3, 4], [2, 4, 6, 8, 10])
    va, vb = np.var([1, 2, 3, 4], ddof=1) / 4, np.var([2, 4, 6, 8, 10], ddof=1) / 5
    assert test.t == pytest.approx(-3.5 / np.sqrt(va + vb))
    assert test.dof == pytest.approx((va + vb) ** 2 / (va**2 / 3 + vb**2 / 4))
    assert 0.06 < test.p < 0.08


def test_correlated_quick_budget_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["study", "correlated", "--budget", "quick", "--out", "study",
                 "--no-progress"]) == 0
    results = tmp_path / "study" / "results"
    report = (results / "report.md").read_text(encoding="utf-8")
    assert "coagents study correlated --budget quick --results study/results" in report
    assert "Verdict" in report and (results / "test_mse_long.png").is_file()
    # the compact finals are those of the run directories
    study = get("correlated")
    arm = next(a for a in study.arms(study.budgets["quick"]) if a.name == "long-pg-d1")
    data = compact.read_study(results, [arm]).arms["long-pg-d1"]
    dirs = sorted((tmp_path / "study" / "runs" / "session-1").glob("correlated-long-pg-d1-*"))
    group = group_runs(load_runs(dirs))[0]
    assert np.array_equal(data.final["test_mse"], group.final("test_mse"))
    assert np.array_equal(data.auc["test_mse"], group.auc("test_mse"))
    # a new study directory with the same compact results runs nothing and writes the same report
    shutil.copytree(results, tmp_path / "committed")
    assert main(["study", "correlated", "--budget", "quick", "--out", "again",
                 "--results", "committed", "--no-progress"]) == 0
    assert not (tmp_path / "again" / "runs").exists()


def test_unknown_study_and_arm_are_refused(tmp_path, capsys):
    assert main(["study", "no-such-study"]) != 0
    assert "unknown study" in capsys.readouterr().err
    assert main(["study", "correlated", "--budget", "quick", "--arms", "zz",
                 "--out", str(tmp_path / "s")]) != 0
    assert "matches no arm" in capsys.readouterr().err
