"""``coagents table`` (issue 12) on hand-made run directories whose metrics are known: one row per
configuration (seeds together), the varying keys, the number of seeds, mean ± standard error of
the final values and of the areas under the curves, Markdown and CSV; clear errors for bad
input."""

import csv
import json
import math
from pathlib import Path

import pytest

from async_coagents.cli import main
from async_coagents.errors import DataError
from async_coagents.experiment import config as cfg
from async_coagents.experiment.tables import results_table

STEPS = [0, 10, 20, 40]


def make_run(path: Path, *, lr=0.01, seed=0, accuracy=(), mse=(), status="completed",
             sweep_jobs=0) -> Path:
    """A run directory as a run writes it, with the given test_accuracy (or test_mse) curve at
    STEPS and a train_loss that is null at step 0."""
    config = cfg.defaults()
    config["name"] = "toy"
    config["network"]["lr"] = lr
    config["run"]["seed"] = seed
    config["sweep"]["jobs"] = sweep_jobs
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    rows = []
    curve = accuracy or mse
    for i, (step, value) in enumerate(zip(STEPS, curve, strict=True)):
        row = {"step": step, "samples": 32 * step, "wall_s": 0.1 * step,
               "train_loss": None if i == 0 else 1.0 - value,
               "test_accuracy" if accuracy else "test_mse": value,
               "entropy": [0.5], "samples_per_s": None if i == 0 else 1000.0}
        rows.append(json.dumps(row))
    (path / "metrics.jsonl").write_text("\n".join(rows) + "\n")
    (path / "summary.json").write_text(json.dumps({"status": status}))
    return path


def auc(values, steps=STEPS):
    """The trapezoid area divided by the step range, written out."""
    area = sum((steps[i + 1] - steps[i]) * (values[i] + values[i + 1]) / 2
               for i in range(len(steps) - 1))
    return area / (steps[-1] - steps[0])


def mean_se(values):
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var / len(values))


CURVES = {  # lr -> one test_accuracy curve per seed
    0.01: [(0.5, 0.6, 0.8, 0.9), (0.5, 0.7, 0.8, 1.0), (0.4, 0.5, 0.9, 0.95)],
    0.1: [(0.5, 0.9, 0.9, 0.9)],
}


@pytest.fixture
def runs(tmp_path):
    """A sweep directory over lr (three seeds at 0.01, one at 0.1), a diverged seed, and a parent
    directory holding it."""
    sweep = tmp_path / "runs" / "sweep"
    (sweep).mkdir(parents=True)
    (sweep / "sweep.json").write_text("{}")
    index = 0
    for lr, curves in CURVES.items():
        for seed, curve in enumerate(curves):
            make_run(sweep / f"toy-{index:03d}", lr=lr, seed=seed, accuracy=curve,
                     sweep_jobs=index)  # [sweep] differs: still one configuration
            index += 1
    make_run(sweep / f"toy-{index:03d}", lr=0.1, seed=1, accuracy=(0.5, 0.1, 0.0, 0.0),
             status="diverged")
    return tmp_path


def test_a_row_per_configuration_with_seeds_means_standard_errors_and_areas(runs):
    table = results_table([runs / "runs"])  # the parent of the sweep: runs are found below
    assert table.keys == ["network.lr"]
    assert table.metrics == ["train_loss", "test_accuracy"]
    assert [(row.values, row.seeds) for row in table.rows] == [({"network.lr": "0.01"}, 3),
                                                                ({"network.lr": "0.1"}, 1)]
    three, one = table.rows
    finals = [c[-1] for c in CURVES[0.01]]
    areas = [auc(c) for c in CURVES[0.01]]
    assert three.stats[("test_accuracy", "final")] == pytest.approx(mean_se(finals))
    assert three.stats[("test_accuracy", "AUC")] == pytest.approx(mean_se(areas))
    assert areas[0] == pytest.approx((10 * 1.1 + 10 * 1.4 + 20 * 1.7) / 2 / 40)
    # train_loss is null at step 0: its area covers steps 10 to 40
    losses = [auc([1 - v for v in c[1:]], STEPS[1:]) for c in CURVES[0.01]]
    assert three.stats[("train_loss", "AUC")] == pytest.approx(mean_se(losses))
    assert one.stats[("test_accuracy", "final")] == (0.9, None)  # one seed: no standard error
    assert one.stats[("test_accuracy", "AUC")][0] == pytest.approx(auc(CURVES[0.1][0]))
    assert len(table.notes) == 1 and "toy-004 (diverged)" in table.notes[0]


def test_markdown_on_stdout_and_csv(runs, capsys, tmp_path):
    out = tmp_path / "table.csv"
    assert main(["table", str(runs / "runs" / "sweep"), "--metric", "test_accuracy",
                 "--csv", str(out)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert "AUC: the area under the curve against updates (steps)" in lines[0]
    assert "by the trapezoid rule, divided by that range, so it is the curve's mean value" in lines[0]
    assert lines[2] == "| name | network.lr | seeds | test_accuracy final | test_accuracy AUC |"
    mean, se = mean_se([c[-1] for c in CURVES[0.01]])
    assert lines[4].startswith(f"| toy | 0.01 | 3 | {mean:.4g} ± {se:.2g} | ")
    assert lines[5] == f"| toy | 0.1 | 1 | 0.9 | {auc(CURVES[0.1][0]):.4g} |"
    assert "left out 1 run(s) that did not complete" in captured.err
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["name", "network.lr", "seeds", "test_accuracy_final_mean",
                             "test_accuracy_final_se", "test_accuracy_auc_mean",
                             "test_accuracy_auc_se"]
    assert [r["seeds"] for r in rows] == ["3", "1"]
    assert float(rows[0]["test_accuracy_auc_mean"]) == pytest.approx(
        mean_se([auc(c) for c in CURVES[0.01]])[0], abs=1e-15)
    assert float(rows[0]["test_accuracy_auc_se"]) == pytest.approx(
        mean_se([auc(c) for c in CURVES[0.01]])[1], abs=1e-15)
    assert rows[1]["test_accuracy_final_se"] == ""


def test_auc_against_samples_divides_by_the_sample_range(runs):
    by_step = results_table([runs / "runs"], metrics=["test_accuracy"])
    by_samples = results_table([runs / "runs"], metrics=["test_accuracy"], x="samples")
    # samples = 32 x step: the mean value of the curve is the same
    for a, b in zip(by_step.rows, by_samples.rows, strict=True):
        assert a.stats[("test_accuracy", "AUC")][0] == pytest.approx(
            b.stats[("test_accuracy", "AUC")][0])


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no run directory in .*empty"):
        results_table([tmp_path / "empty"])
    with pytest.raises(DataError, match="does not exist"):
        results_table([tmp_path / "nowhere"])
    make_run(tmp_path / "mixed" / "a", accuracy=(0.5, 0.6, 0.7, 0.8))
    make_run(tmp_path / "mixed" / "b", mse=(2.0, 1.0, 0.5, 0.4))
    with pytest.raises(DataError, match=r"the runs mix tasks \(classification: .*a; regression: "
                                        r".*b\)"):
        results_table([tmp_path / "mixed"])
    make_run(tmp_path / "broken" / "a", accuracy=(0.5, 0.6, 0.7, 0.8), status="diverged")
    with pytest.raises(DataError, match=r"none of the 1 run\(s\) found completed: .*\(diverged\)"):
        results_table([tmp_path / "broken"])
    make_run(tmp_path / "fine" / "a", accuracy=(0.5, 0.6, 0.7, 0.8))
    with pytest.raises(DataError, match="metric 'test_mse' is logged by none of the runs; their "
                                        "metrics: train_loss, test_accuracy"):
        results_table([tmp_path / "fine"], metrics=["test_mse"])
    capsys.readouterr()
    assert main(["table", str(tmp_path / "empty")]) == 1
    assert capsys.readouterr().err.startswith("coagents table: error: no run directory in")
