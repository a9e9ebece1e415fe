"""The reproduction study (``coagents study``): Welch's test against known values, every study's
quick budget end to end with its report written from the compact results (each final and area is
the one the run directories give), resumption from the compact results alone, and the results
page gathered from the reports."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from async_coagents.cli import main
from async_coagents.data.datasets import find_dataset
from async_coagents.experiment.results import group_runs, load_runs
from async_coagents.study import STUDIES, compact, get, runner
from async_coagents.study.welch import student_t_two_sided, welch, welch_summary


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


def test_welch_from_summary_statistics_is_welch_of_the_samples():
    a, b = [0.2, 0.5, 0.4, 0.9], [0.81, 0.8, 0.83, 0.79, 0.82]
    summary = welch_summary((np.mean(a), np.var(a, ddof=1), 4), (np.mean(b), np.var(b, ddof=1), 5))
    assert (summary.t, summary.dof, summary.p) == pytest.approx((welch(a, b).t, welch(a, b).dof,
                                                                welch(a, b).p))


def test_rule_family_reward_is_chungs_figure_from_the_run_summaries(tmp_path, monkeypatch):
    """The multiplexer's mean reward is ``2a - 1`` of each run's prequential accuracy, the
    figure ``coagents bench --only multiplexer20`` reads from the run summary."""
    monkeypatch.chdir(tmp_path)
    assert main(["study", "rule-family", "--budget", "quick", "--arms", "mux20-weight-max*",
                 "--out", "study", "--no-progress"]) == 0
    report = (tmp_path / "study" / "results" / "report.md").read_text(encoding="utf-8")
    assert "not tested yet" in report  # the quick budget is not Chung's 800,000 episodes
    study = get("rule-family")
    arms = [a for a in study.arms(study.budgets["quick"]) if a.name.startswith("mux20-weight")]
    data = compact.read_study(tmp_path / "study" / "results", arms)
    for arm in arms:
        summaries = sorted((d for d in (tmp_path / "study" / "runs" / "session-1").iterdir()
                            if re.fullmatch(rf"rule-family-{arm.name}-\d+-seed\d+", d.name)),
                           key=lambda d: d.name)
        accuracy = [json.loads((d / "summary.json").read_text())["train"]["accuracy"]
                    for d in summaries]
        assert np.allclose(data.arms[arm.name].final["prequential_accuracy"], accuracy)
    assert "| weight-max, Chung's Adam and per-layer rates | 2 |" in report


@pytest.mark.parametrize("name", list(STUDIES))
def test_every_study_runs_its_quick_budget_end_to_end(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    assert main(["study", name, "--budget", "quick", "--out", "study", "--no-progress"]) == 0
    results = tmp_path / "study" / "results"
    report = (results / "report.md").read_text(encoding="utf-8")
    assert f"coagents study {name} --budget quick --results study/results" in report
    figures = re.findall(r"\]\(([^)]+\.png)\)", report)
    assert figures and all((results / f).is_file() for f in figures)
    # the compact finals and areas are those of the run directories, for every arm and metric
    study = get(name)
    arms = study.arms(study.budgets["quick"])
    data = compact.read_study(results, arms)
    assert set(data.arms) == {a.name for a in arms}
    for arm in arms:
        dirs = sorted(d for d in (tmp_path / "study" / "runs" / "session-1").iterdir()
                      if re.fullmatch(rf"{re.escape(name)}-{re.escape(arm.name)}-\d+-seed\d+",
                                      d.name))
        group = group_runs(load_runs(dirs))[0]
        assert data.arms[arm.name].n == len(dirs) == study.budgets["quick"].seeds
        for metric, finals in data.arms[arm.name].final.items():
            assert np.array_equal(finals, group.final(metric), equal_nan=True), (arm, metric)
            assert np.array_equal(data.arms[arm.name].auc[metric], group.auc(metric),
                                  equal_nan=True), (arm, metric)
    # a new study directory with the same compact results runs nothing and writes the same report
    shutil.copytree(results, tmp_path / "committed")
    assert main(["study", name, "--budget", "quick", "--out", "again",
                 "--results", "committed", "--no-progress"]) == 0
    assert not (tmp_path / "again" / "runs").exists()
    again = (tmp_path / "committed" / "report.md").read_text(encoding="utf-8")
    assert again == report.replace("study/results", "committed")


def test_the_results_page_gathers_the_reports_and_their_verdicts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "docs" / "results"
    assert main(["study", "asynchrony", "--budget", "quick", "--out", "study",
                 "--results", "docs/results/asynchrony", "--no-progress"]) == 0
    (root / "fashion-depth").mkdir()
    (root / "fashion-depth" / "verdicts.json").write_text(json.dumps({
        "study": "fashion-depth", "budget": "paper", "verdicts": [
            {"claim": "a claim", "verdict": "partly reproduced", "evidence": "e"}]}))
    (root / "fashion-depth" / "report.md").write_text("## Depth\n\n![a figure](accuracy.png)\n")
    assert main(["study", "--page", "--results-root", "docs/results"]) == 0
    page = (tmp_path / "docs" / "results.md").read_text(encoding="utf-8")
    assert "| fashion-depth (budget paper) | a claim | partly reproduced |" in page
    assert "](results/fashion-depth/accuracy.png)" in page
    assert "](results/asynchrony/test_accuracy.png)" in page
    assert "Accuracy and staleness per setting" in page
    assert "`correlated`" in next(line for line in page.splitlines()
                                  if line.startswith("Not run yet:"))


def test_unknown_study_and_arm_are_refused(tmp_path, capsys):
    assert main(["study", "no-such-study"]) != 0
    assert "unknown study" in capsys.readouterr().err
    assert main(["study", "correlated", "--budget", "quick", "--arms", "zz",
                 "--out", str(tmp_path / "s")]) != 0
    assert "matches no arm" in capsys.readouterr().err


def test_a_study_runs_on_mnist_with_its_own_results(tmp_path, monkeypatch, fashion_mnist, capsys):
    """``--dataset mnist`` trains the image arms on MNIST (here Fashion-MNIST's files under the
    name ``mnist``: the loader reads any MNIST-style IDX files), the report says so and prints
    the flag in its command, and results of one dataset are never mixed with the other's."""
    data = tmp_path / "data"
    (data / "mnist").mkdir(parents=True)
    for f in find_dataset("fashion-mnist").iterdir():
        if f.name.endswith(".gz"):
            (data / "mnist" / f.name).symlink_to(f)
    monkeypatch.setenv("COAGENTS_DATA_DIR", str(data))
    monkeypatch.chdir(tmp_path)
    args = ["study", "fashion-depth", "--budget", "quick", "--arms", "baseline-1layer",
            "--no-progress"]
    assert main([*args, "--dataset", "mnist", "--out", "on-mnist"]) == 0
    member = next((tmp_path / "on-mnist" / "runs" / "session-1").glob("*-seed0"))
    assert json.loads((member / "config.json").read_text())["data"]["dataset"] == "mnist"
    report = (tmp_path / "on-mnist" / "results" / "report.md").read_text(encoding="utf-8")
    assert "Dataset of the recorded runs: MNIST, the paper's." in report
    assert "--dataset mnist --results on-mnist/results" in report
    capsys.readouterr()
    assert main([*args, "--out", "on-fashion", "--results", "on-mnist/results"]) == 1
    assert "run on mnist, not fashion-mnist" in capsys.readouterr().err
    assert main(["study", "correlated", "--budget", "quick", "--dataset", "mnist",
                 "--out", "corr", "--no-progress"]) == 1
    assert "trains on an image dataset" in capsys.readouterr().err
    assert not (tmp_path / "corr").exists()  # refused before anything is written


def test_results_of_one_budget_are_never_mixed_with_another(tmp_path, capsys):
    args = ["study", "correlated", "--arms", "short-pg-d0", "--no-progress",
            "--results", str(tmp_path / "results")]
    assert main([*args, "--budget", "quick", "--out", str(tmp_path / "quick")]) == 0
    capsys.readouterr()
    assert main([*args, "--budget", "paper", "--seeds", "1", "--out", str(tmp_path / "paper")]) == 1
    assert "holds the runs of budget 'quick', not 'paper'" in capsys.readouterr().err


def test_every_budget_that_counts_its_updates_counts_them_right(tmp_path):
    """A budget's words "E epochs (N updates)" match its arms' configs: E epochs of the 50,000
    training images (the paper's split) in batches of the arm's batch size."""
    stated = re.compile(r"(\d[\d,]*) epochs \((\d[\d,.]*)( M)? updates\)")
    checked = 0
    for name in STUDIES:
        study = get(name)
        for budget in study.budgets.values():
            match = stated.search(budget.description)
            if match is None:
                continue
            plan = runner.StudyPlan(study, budget, tmp_path / study.name)
            config, _ = plan.runs([(plan.arms[0], [0])])[0]
            epochs = int(match[1].replace(",", ""))
            updates = float(match[2].replace(",", "")) * (1e6 if match[3] else 1)
            assert config["run"]["epochs"] == epochs, (study.name, budget.name)
            expected = epochs * -(-50_000 // config["data"]["batch"])
            assert updates == pytest.approx(expected, rel=1e-3), (study.name, budget.name)
            checked += 1
    assert checked >= 5
