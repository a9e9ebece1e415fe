"""Plots from run directories: loading and its errors, grouping seeds and labels, mean and standard
error, EMA, and the PNG files written (on small fake run directories)."""

import copy
import json
import logging
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from async_coagents.errors import ConfigError, DataError
from async_coagents.experiment.plots import FIGURES, make_figures, plot_runs
from async_coagents.experiment.results import (
    PlotDataWarning,
    default_metric,
    ema,
    group_runs,
    load_runs,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: The figures of the fake runs below, which record no gradient variance (grad_variance.png has
#: its own test).
RECORDED = [name for name in FIGURES if name != "grad_variance.png"]

BASE_CONFIG = {
    "name": "mnist-offpolicy",
    "network": {"rule": "ac-offpolicy", "lr": 0.001, "hidden": [64, 64]},
    "data": {"dataset": "mnist", "batch": 32},
    "run": {"seed": 1, "evaluate_every": 10},
    "backend": {"kind": "local"},
}


def _config(name: str = "mnist-offpolicy", seed: int = 1, **network) -> dict:
    config = copy.deepcopy(BASE_CONFIG)
    config["name"] = name
    config["network"].update(network)
    config["run"]["seed"] = seed
    config["run"]["out"] = f"runs/{name}-{seed}"
    return config


def _classification(n: int, seed: int, layers: int = 2, staleness: bool = False) -> list[dict]:
    rng = np.random.default_rng(seed)
    records = []
    for t in range(n):
        acc = 1.0 - 0.9 * math.exp(-t / 3) + 0.02 * rng.normal()
        record = {
            "step": 10 * t, "samples": 320 * t, "wall_s": 0.5 * t + 0.01 * seed,
            "train_loss": None if t == 0 else 2.3 * math.exp(-t / 4),
            "test_accuracy": acc, "valid_accuracy": acc - 0.01,
            "test_ce": 2.3 - acc, "valid_ce": 2.31 - acc,
            "entropy": [0.69 * math.exp(-t / (5 + i)) for i in range(layers)],
            "sparsity": [0.5 - 0.02 * t * (i + 1) / layers for i in range(layers)],
            "samples_per_s": 640.0,
        }
        if staleness:
            record["staleness_mean"] = [0.5 * (i + 1) for i in range(layers + 1)]
            record["staleness_max"] = [float(i + 2) for i in range(layers + 1)]
        records.append(record)
    return records


def _regression(n: int, seed: int) -> list[dict]:
    return [{"step": 10 * t, "samples": 320 * t, "wall_s": 0.1 * t,
             "train_loss": None if t == 0 else 50.0 / (t + 1) + seed,
             "test_mse": 40.0 / (t + 1) + seed, "valid_mse": 42.0 / (t + 1) + seed,
             "entropy": [], "sparsity": []} for t in range(n)]


def write_run(root: Path, dirname: str, config: dict, records: list[dict], tail: str = "") -> Path:
    """A fake run directory: config.json and metrics.jsonl (with ``tail`` appended verbatim)."""
    directory = root / dirname
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(config))
    lines = "".join(json.dumps(r) + "\n" for r in records)
    (directory / "metrics.jsonl").write_text(lines + tail)
    return directory


@pytest.fixture
def sweep(tmp_path):
    """Two learning rates × three seeds and one backprop config × two seeds (classification); the
    third seed of lr=0.01 stopped early, the second seed of lr=0.001 was killed mid-line."""
    dirs = []
    for seed in (1, 2, 3):
        tail = '{"step": 80, "samples": 25' if seed == 2 else ""
        dirs.append(write_run(tmp_path, f"a{seed}", _config(seed=seed, lr=0.001),
                              _classification(8, seed, staleness=True), tail))
    for seed in (1, 2, 3):
        n = 5 if seed == 3 else 8
        dirs.append(write_run(tmp_path, f"b{seed}", _config(seed=seed, lr=0.01),
                              _classification(n, seed, staleness=True)))
    for seed in (1, 2):
        dirs.append(write_run(tmp_path, f"c{seed}", _config("mnist-backprop", seed=seed, rule="backprop"),
                              _classification(8, seed, layers=0)))
    return dirs


def _assert_png(path: Path, min_side: int = 300) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) >= min_side
    assert np.ptp(image[..., :3]) > 0.5  # not a blank canvas


# ------------------------------------------------------------------------------------- loading


def test_load_runs_reads_columns_and_labels(sweep):
    with pytest.warns(PlotDataWarning, match=r"a2.*metrics.jsonl:9: skipping the unfinished last line"):
        runs = load_runs(sweep)
    assert [r.seed for r in runs] == [1, 2, 3, 1, 2, 3, 1, 2]
    assert [r.label for r in runs] == (["mnist-offpolicy (network.lr=0.001)"] * 3
                                       + ["mnist-offpolicy (network.lr=0.01)"] * 3
                                       + ["mnist-backprop"] * 2)
    first = runs[0]
    assert first.task == "classification"
    assert first.metrics["test_accuracy"].shape == (8,)
    assert first.metrics["entropy"].shape == (8, 2)
    assert first.metrics["staleness_mean"].shape == (8, 3)
    assert np.isnan(first.metrics["train_loss"][0]) and np.isfinite(first.metrics["train_loss"][1:]).all()
    assert first.steps.tolist() == list(range(0, 80, 10))
    assert len(runs[1].steps) == 8  # the truncated ninth line is gone
    assert runs[6].metrics["entropy"].shape == (8, 0)


def test_labels_name_every_differing_key_and_ignore_seed_and_out(tmp_path):
    dirs = [write_run(tmp_path, "x", _config(lr=0.1, hidden=[32]), _regression(3, 0)),
            write_run(tmp_path, "y", _config(seed=7, lr=0.1, hidden=[32]), _regression(3, 0)),
            write_run(tmp_path, "z", _config(lr=0.2, hidden=[64]), _regression(3, 0)),
            write_run(tmp_path, "w", _config("other", lr=0.3), _regression(3, 0))]
    labels = [r.label for r in load_runs(dirs)]
    assert labels == ["mnist-offpolicy (network.lr=0.1, network.hidden=[32])"] * 2 + [
        "mnist-offpolicy (network.lr=0.2, network.hidden=[64])", "other"]


def test_truncated_last_line_is_skipped_but_a_bad_middle_line_names_the_line(tmp_path):
    good = _regression(3, 0)
    path = write_run(tmp_path, "ok", _config(), good, tail='{"step": 30, "test_m')
    with pytest.warns(PlotDataWarning, match="metrics.jsonl:4"):
        (run,) = load_runs([path])
    assert run.steps.tolist() == [0, 10, 20]

    bad = write_run(tmp_path, "bad", _config(), [])
    lines = [json.dumps(r) for r in good]
    lines.insert(1, '{"step": 5, "test_mse": ')
    (bad / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"bad/metrics\.jsonl, line 2: not an evaluation row"):
        load_runs([bad])


@pytest.mark.parametrize("case", ["missing", "file", "no_metrics", "no_config", "empty", "only_blank"])
def test_not_a_run_directory_is_a_clear_error(tmp_path, case):
    path = tmp_path / "run"
    if case == "file":
        path.write_text("x")
    elif case != "missing":
        path.mkdir()
        if case != "no_config":
            (path / "config.json").write_text(json.dumps(_config()))
        if case != "no_metrics":
            (path / "metrics.jsonl").write_text("\n\n" if case == "only_blank" else "")
    expected = {"missing": "does not exist", "file": "not a run directory", "no_metrics": "no metrics.jsonl",
                "no_config": "no config.json", "empty": "no evaluations", "only_blank": "no evaluations"}
    with pytest.raises(DataError, match=expected[case]):
        load_runs([path])


def test_a_per_layer_list_that_changes_length_is_an_error(tmp_path):
    records = _regression(3, 0)
    records[2]["entropy"] = [0.5]
    path = write_run(tmp_path, "r", _config(), records)
    with pytest.raises(DataError, match=r"metrics\.jsonl:3: 'entropy'"):
        load_runs([path])


# ------------------------------------------------------------------------- grouping and statistics


def test_grouping_keeps_the_common_prefix_with_a_warning(sweep):
    with pytest.warns(PlotDataWarning):
        runs = load_runs(sweep)
    with pytest.warns(PlotDataWarning, match=r"lr=0\.01\)': seeds have \[8, 8, 5\] evaluations; using the 5"):
        groups = group_runs(runs)
    assert [(g.label, g.n) for g in groups] == [("mnist-offpolicy (network.lr=0.001)", 3),
                                              ("mnist-offpolicy (network.lr=0.01)", 3),
                                              ("mnist-backprop", 2)]
    assert len(groups[0].steps) == 8
    assert groups[1].steps.tolist() == [0, 10, 20, 30, 40]
    assert groups[1].curve("test_accuracy").mean.shape == (5,)


def test_mean_and_standard_error_on_hand_made_numbers(tmp_path):
    values = {1: [1.0, 2.0, 4.0], 2: [3.0, 2.0, 6.0], 3: [5.0, 2.0, 8.0]}
    dirs = [write_run(tmp_path, f"s{seed}", _config(seed=seed),
                      [{"step": t, "samples": 100 * t, "wall_s": float(seed * t), "test_mse": v,
                        "entropy": [v, 2 * v]} for t, v in enumerate(vals)])
            for seed, vals in values.items()]
    (group,) = group_runs(load_runs(dirs))
    curve = group.curve("test_mse")
    np.testing.assert_allclose(curve.mean, [3.0, 2.0, 6.0])
    np.testing.assert_allclose(curve.se, [2.0 / math.sqrt(3), 0.0, 2.0 / math.sqrt(3)])  # std (ddof=1) = 2
    assert curve.n == 3
    layers = group.curve("entropy")
    np.testing.assert_allclose(layers.mean, [[3.0, 6.0], [2.0, 4.0], [6.0, 12.0]])
    np.testing.assert_allclose(layers.se[:, 1], 2 * curve.se)
    np.testing.assert_allclose(group.curve("test_mse", x="samples").x, [0, 100, 200])
    np.testing.assert_allclose(group.curve("test_mse", x="wall_s").x, [0.0, 2.0, 4.0])  # mean over seeds
    smoothed = group.curve("test_mse", smooth=0.5)  # EMA per seed, then the mean
    np.testing.assert_allclose(smoothed.mean, np.mean([ema(np.array(v), 0.5) for v in values.values()], 0))

    (single,) = group_runs(load_runs(dirs[:1]))
    assert single.curve("test_mse").se is None


def test_ema():
    np.testing.assert_allclose(ema(np.array([0.0, 1.0, 1.0]), 0.5), [0.0, 0.5, 0.75])
    np.testing.assert_allclose(ema(np.array([np.nan, 2.0, np.nan, 4.0]), 0.5), [np.nan, 2.0, np.nan, 3.0])
    columns = ema(np.array([[0.0, 10.0], [1.0, 20.0]]), 0.9)
    np.testing.assert_allclose(columns, [[0.0, 10.0], [0.1, 11.0]])
    data = np.array([3.0, 1.0])
    assert ema(data, 0.0) is not data


def test_mixed_tasks_need_a_shared_metric(tmp_path):
    cls = write_run(tmp_path, "cls", _config(), _classification(4, 1))
    reg = write_run(tmp_path, "reg", _config("boston"), _regression(4, 1))
    runs = load_runs([cls, reg])
    mixed = r"do not share a task \(classification: \S*cls; regression: \S*reg\)"
    with pytest.raises(DataError, match=mixed):
        default_metric(runs)
    with pytest.raises(DataError, match=r"'test_accuracy' is missing .*reg"):
        plot_runs([cls, reg], tmp_path / "out", metric="test_accuracy")
    assert default_metric(runs, "train_loss") == "train_loss"
    with pytest.raises(ConfigError, match="per-layer list"):
        default_metric(runs[:1], "entropy")


# ---------------------------------------------------------------------------------------- figures


def test_plot_runs_writes_the_three_figures(sweep, tmp_path):
    import matplotlib

    rc_before = dict(matplotlib.rcParams)
    pyplot_before = "matplotlib.pyplot" in sys.modules
    out = tmp_path / "plots" / "nested"
    with pytest.warns(PlotDataWarning):
        paths = plot_runs(sweep, out, smooth=0.9)
    assert dict(matplotlib.rcParams) == rc_before  # no global style or backend change
    assert ("matplotlib.pyplot" in sys.modules) == pyplot_before
    assert [p.name for p in paths] == ["learning_curves.png", "entropy_sparsity.png", "staleness.png"]
    for path in paths:
        assert path.parent == out
        _assert_png(path)


def test_x_samples_with_another_metric(sweep, tmp_path):
    with pytest.warns(PlotDataWarning):
        paths = plot_runs(sweep[:3], tmp_path / "samples", x="samples", metric="test_ce")
    assert [p.name for p in paths] == ["learning_curves.png", "entropy_sparsity.png", "staleness.png"]
    for path in paths:
        _assert_png(path)


def test_no_hidden_layers_skips_the_entropy_figure(tmp_path, caplog):
    dirs = [write_run(tmp_path, f"r{seed}", _config("boston", seed=seed), _regression(6, seed))
            for seed in (1, 2, 3)]
    with caplog.at_level(logging.INFO, logger="async_coagents.experiment.plots"):
        paths = plot_runs(dirs, tmp_path / "out")
    assert [p.name for p in paths] == ["learning_curves.png"]
    assert not (tmp_path / "out" / "entropy_sparsity.png").exists()
    assert "entropy_sparsity.png not drawn: no run has stochastic hidden layers" in caplog.text
    _assert_png(paths[0])

    (tmp_path / "out" / "staleness.png").write_bytes(PNG_SIGNATURE)  # left by an earlier call
    caplog.clear()
    plot_runs(dirs[:1], tmp_path / "out")
    assert "staleness.png is left from an earlier plot" in caplog.text


def test_bad_arguments(sweep, tmp_path):
    with pytest.raises(ConfigError, match="x must be one of"):
        plot_runs(sweep, tmp_path, x="epoch")
    with pytest.raises(ConfigError, match="smooth"):
        plot_runs(sweep, tmp_path, smooth=1.0)
    with pytest.raises(DataError, match="no run directories"):
        plot_runs([], tmp_path)


# ------------------------------------------------------------------- legends, titles, gaps, overlaps


def _figures(dirs, **kwargs):
    """``make_figures`` of the run directories, ignoring PlotDataWarnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PlotDataWarning)
        return make_figures(load_runs(dirs), **kwargs)


def _outside(fig) -> list[str]:
    """Texts of the legends of ``fig`` that stick out of the figure (after drawing it)."""
    fig.canvas.draw()
    inside = fig.bbox.padded(1.0)
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    return [" / ".join(t.get_text() for t in legend.get_texts()) for legend in legends
            if not _contains(inside, legend.get_window_extent())]


def _contains(outer, inner) -> bool:
    return (outer.x0 <= inner.x0 and inner.x1 <= outer.x1 and outer.y0 <= inner.y0
            and inner.y1 <= outer.y1)


def _many_configs(root: Path, count: int) -> list[Path]:
    return [write_run(root, f"m{i}", _config(f"a-rather-long-configuration-name-number-{i}",
                                             hidden=[64] * (1 + i % 3)),
                      _classification(6, i, layers=1 + i % 3, staleness=True)) for i in range(count)]


@pytest.mark.parametrize("case", ["one_run", "one_run_deep", "sweep", "many_configs"])
def test_every_legend_fits_inside_its_figure(sweep, tmp_path, case):
    dirs = {"one_run": lambda: [write_run(tmp_path, "one", _config(), _classification(6, 1, staleness=True))],
            "one_run_deep": lambda: [write_run(tmp_path, "deep", _config(hidden=[8] * 5),
                                               _classification(6, 1, layers=5, staleness=True))],
            "sweep": lambda: sweep,
            "many_configs": lambda: _many_configs(tmp_path, 8)}[case]()
    figures = _figures(dirs)
    assert sorted(figures) == sorted(RECORDED)
    for name, fig in figures.items():
        assert fig.legends, name
        assert _outside(fig) == [], name


def test_saved_images_are_not_cut_and_not_grown(tmp_path):
    """Saved with bbox_inches="tight": nothing is cropped, and since the legend already fits, the
    image is no wider than the figure and its 0.05 in padding on each side."""
    import matplotlib.image

    run = write_run(tmp_path, "one", _config(), _classification(6, 1, staleness=True))
    widths = {name: (fig.get_figwidth() + 0.1) * fig.dpi for name, fig in _figures([run]).items()}
    for path in plot_runs([run], tmp_path / "out"):
        _assert_png(path)
        assert matplotlib.image.imread(path).shape[1] <= widths[path.name] + 1


def _suptitle(fig) -> str:
    return fig.get_suptitle().replace("\n", " ")


def test_titles_claim_a_mean_over_seeds_only_when_there_are_seeds(sweep, tmp_path):
    one = write_run(tmp_path, "one", _config("solo"), _classification(6, 1, staleness=True))
    figures = _figures([one], x="wall_s", smooth=0.9)
    for name, fig in figures.items():
        title = _suptitle(fig)
        assert "s.e." not in title and "over seeds" not in title, name
        assert ("one run per curve" if name == "learning_curves.png" else "one run per panel") in title
        assert "EMA 0.9" in title
        assert all("over seeds" not in ax.get_xlabel() for ax in fig.axes), name
    legend_texts = [t.get_text() for t in figures["learning_curves.png"].legends[0].get_texts()]
    assert legend_texts == ["solo"]  # no "[n=1]"

    figures = _figures(sweep)  # every configuration has 2 or 3 seeds
    for name, fig in figures.items():
        assert "mean ± 1 s.e. over seeds" in _suptitle(fig) and "where n > 1" not in _suptitle(fig), name

    figures = _figures([*sweep[:3], one])  # three seeds and one run
    assert "mean ± 1 s.e. over seeds (where n > 1)" in _suptitle(figures["learning_curves.png"])
    labels = [t.get_text() for t in figures["learning_curves.png"].legends[0].get_texts()]
    assert labels == ["mnist-offpolicy  [n=3]", "solo  [n=1]"]


def _panel_lines(fig, panel: int = 0) -> list:
    return fig.axes[panel].get_lines()


def test_null_per_layer_values_are_gaps_not_zeros(tmp_path):
    """Staleness is null before the first update (a list of nulls, a bare null or no key at all);
    entropy may be null for a layer in a row: those points are NaN and not drawn."""
    def records(seed, step0):
        rows = _classification(6, seed, staleness=True)
        for key in ("staleness_mean", "staleness_max"):
            if step0 == "absent":
                del rows[0][key]
            else:
                rows[0][key] = [None, None, None] if step0 == "list" else None
        rows[3]["entropy"] = [None, 0.3]
        del rows[4]["sparsity"]
        return rows

    dirs = [write_run(tmp_path, f"s{seed}", _config(seed=seed), records(seed, step0))
            for seed, step0 in ((1, "list"), (2, "absent"), (3, "null"))]
    runs = load_runs(dirs)
    for run in runs:
        assert run.metrics["staleness_mean"].shape == (6, 3)
        assert np.isnan(run.metrics["staleness_mean"][0]).all()
        assert np.isfinite(run.metrics["staleness_mean"][1:]).all()
        assert np.isnan(run.metrics["entropy"][3, 0]) and np.isnan(run.metrics["sparsity"][4]).all()
    figures = _figures(dirs)
    for line in _panel_lines(figures["staleness.png"]):
        y = line.get_ydata()
        assert np.isnan(y[0]) and np.isfinite(y[1:]).all()  # nothing drawn at step 0
    entropy = _panel_lines(figures["entropy_sparsity.png"])
    assert np.isnan(entropy[0].get_ydata()[3]) and np.isnan(entropy[1].get_ydata()[4])
    paths = plot_runs(dirs, tmp_path / "out")
    assert [p.name for p in paths] == RECORDED


def test_grad_variance_is_drawn_per_layer_agent_on_a_log_scale(tmp_path):
    """run.record_grad_variance: one solid line per layer agent that measured it (the read-out
    never does: its line is empty), a log y axis, nothing at step 0."""
    rows = _classification(6, 1, staleness=True)
    for t, row in enumerate(rows):
        row["grad_variance"] = [None] * 3 if t == 0 else [2.0 ** -t, 10.0 * 2.0 ** -t, None]
    run = write_run(tmp_path, "gv", _config(), rows)
    fig = _figures([run])["grad_variance.png"]
    assert fig.axes[0].get_yscale() == "log"
    lines = _panel_lines(fig)
    assert len(lines) == 3 and {line.get_linestyle() for line in lines} == {"-"}
    np.testing.assert_allclose(lines[1].get_ydata()[1:], [10.0 * 2.0 ** -t for t in range(1, 6)])
    assert np.isnan(lines[0].get_ydata()[0]) and np.isnan(lines[2].get_ydata()).all()
    assert _outside(fig) == []
    assert [p.name for p in plot_runs([run], tmp_path / "out")] == list(FIGURES)


def test_a_run_with_no_staleness_yet_does_not_break_the_figure(tmp_path, caplog):
    """A run killed after its first evaluation has staleness null on every line: the key is as
    good as absent; with nothing recorded anywhere, staleness.png is not drawn."""
    first = _classification(1, 1, staleness=True)
    first[0]["staleness_mean"] = first[0]["staleness_max"] = None
    early = write_run(tmp_path, "early", _config(seed=1), first)
    later = write_run(tmp_path, "later", _config(seed=2), _classification(6, 2, staleness=True))
    (run,) = load_runs([early])
    assert "staleness_mean" not in run.metrics
    figures = _figures([early, later])  # one group; the early seed has no staleness
    panel = figures["staleness.png"].axes[0]
    assert [t.get_text() for t in panel.texts] == ["no staleness recorded"]

    nulls = _classification(3, 3, staleness=True)
    for row in nulls:
        row["staleness_mean"] = row["staleness_max"] = [None, None, None]
    only_nulls = write_run(tmp_path, "nulls", _config(seed=3), nulls)
    with caplog.at_level(logging.INFO, logger="async_coagents.experiment.plots"):
        paths = plot_runs([only_nulls], tmp_path / "out")
    assert [p.name for p in paths] == ["learning_curves.png", "entropy_sparsity.png"]
    assert "staleness.png not drawn" in caplog.text


def test_identical_curves_stay_visible(tmp_path):
    """A Ray run and its local simulation give the same numbers: the later one is drawn as open
    markers on the earlier line, and its legend entry says which curve it repeats."""
    records = _classification(12, 1, staleness=True)
    dirs = [write_run(tmp_path, name, _config(name), records) for name in ("demo-local", "demo-ray")]
    fig = _figures(dirs)["learning_curves.png"]
    ax_metric, ax_loss = fig.axes[:2]
    local, ray = (line for line in ax_metric.get_lines() if not line.get_label().startswith("_"))
    assert local.get_linestyle() == "-" and local.get_marker() in ("None", "", None)
    assert ray.get_linestyle() == "None" and ray.get_marker() == "o"
    assert ray.get_label() == "demo-ray  (same curve as demo-local)"
    np.testing.assert_array_equal(ray.get_ydata(), local.get_ydata())
    assert [line.get_linestyle() for line in ax_loss.get_lines()] == ["-", "None"]
    key = [t.get_text() for t in ax_metric.get_legend().get_texts()]
    assert key == ["test", "valid", "markers: same values as the line under them"]

    stale = _figures(dirs[:1])["staleness.png"]  # three agents, mean != max: lines
    assert [line.get_linestyle() for line in stale.axes[0].get_lines()] == ["-", ":"] * 3
    flat = _classification(4, 1, staleness=True)
    for row in flat:
        row["staleness_mean"] = row["staleness_max"] = [3.0, 3.0, 3.0]
    stale = _figures([write_run(tmp_path, "flat", _config("flat"), flat)])["staleness.png"]
    lines = stale.axes[0].get_lines()
    assert [line.get_linestyle() for line in lines] == ["-"] + ["None"] * 5
    assert len({line.get_marker() for line in lines[1:]}) == 5  # each repeat its own shape
    starts = [line.get_markevery()[0] for line in lines[1:]]
    assert len(set(starts)) == 5  # staggered: no marker covers another
    legend = [t.get_text() for t in stale.legends[0].get_texts()]
    assert legend[:3] == ["layer agent 0", "layer agent 1", "output agent"]
    assert legend[-1] == "markers: same values as the line under them"


def test_a_valid_curve_equal_to_the_test_curve_is_not_drawn_twice(tmp_path):
    records = _classification(6, 1)
    for row in records:
        row["valid_accuracy"] = row["test_accuracy"]
    fig = _figures([write_run(tmp_path, "mux", _config("mux"), records)])["learning_curves.png"]
    ax_metric = fig.axes[0]
    assert ax_metric.get_title() == "test accuracy (fraction correct) (valid is the same)"
    assert len(ax_metric.get_lines()) == 1 and ax_metric.get_legend() is None
