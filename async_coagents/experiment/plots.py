"""The PNG figures of run directories, drawn from their loaded and grouped results
(:mod:`async_coagents.experiment.results`): learning curves, per-layer entropy and sparsity
(the paper's analysis scripts, ``paper_method.md`` §4.3, §4.4, §7), staleness and gradient
variance.

Runs that cannot be drawn together (the plotted metric is missing from a run, seeds of one
configuration with different layer counts) raise :class:`~async_coagents.errors.DataError`; bad
arguments of :func:`plot_runs` (``x``, ``smooth``, a metric that is not a scalar column) raise
:class:`~async_coagents.errors.ConfigError`. A figure that is not drawn because nothing in the runs
feeds it is reported on the ``async_coagents.experiment.plots`` logger at INFO level.

:func:`plot_runs` writes the figures; :func:`make_figures` returns them unsaved (to inspect or
restyle). Legends are sized to fit inside their figure, titles claim a mean ± s.e. only where a
configuration has several seeds, and a line with the same points as an earlier one on the same
axes (a Ray run and its local simulation) is drawn as open markers so that neither hides the other.

Matplotlib is imported only when a figure is drawn, and only its object-oriented API is used
(``Figure`` on an Agg canvas): no pyplot state, no backend switch, nothing global is touched.
"""

from __future__ import annotations

import logging
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from async_coagents.errors import ConfigError, DataError
from async_coagents.experiment.results import (
    METRICS_FILE,
    X_AXES,
    Curve,
    Group,
    RunResults,
    default_metric,
    group_runs,
    load_runs,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["FIGURES", "make_figures", "plot_runs"]

logger = logging.getLogger(__name__)

# -------------------------------------------------------------------------------------- figures


FIGURES = ("learning_curves.png", "entropy_sparsity.png", "staleness.png", "grad_variance.png")


@dataclass(frozen=True)
class _LayerSpec:
    """What one per-layer figure draws: ``columns[0]`` solid and ``columns[1]`` (if any) dotted."""

    columns: tuple[str, str | None]
    title: str
    ylabel: str
    layer: str  # legend name of agent i: f"{layer} {i}"
    styles: tuple[str, str]  # legend names of the solid and dotted lines
    empty: str  # panel text when a configuration recorded nothing
    skipped: str  # log text when no run recorded anything
    output_last: bool = False  # the last entry of each list is the output agent
    log: bool = False  # a logarithmic y axis


_ENTROPY = _LayerSpec(("entropy", "sparsity"), "Per-layer entropy (solid) and sparsity (dotted)",
                      "entropy (nats) / sparsity (fraction of units active)", "layer",
                      ("entropy (nats)", "sparsity (fraction active)"), "no stochastic hidden layers",
                      "no run has stochastic hidden layers (empty 'entropy' lists)")
_STALENESS = _LayerSpec(("staleness_mean", "staleness_max"),
                        "Staleness per layer agent: mean (solid) and max (dotted)",
                        "staleness (parameter updates between forward and update)", "layer agent",
                        ("mean staleness", "max staleness"), "no staleness recorded",
                        "no run recorded a staleness_mean value", output_last=True)
_GRAD_VARIANCE = _LayerSpec(("grad_variance", None),
                            "Gradient variance per layer agent (run.record_grad_variance)",
                            "trace of the covariance of the per-example gradient estimates",
                            "layer agent", ("gradient variance", ""), "no gradient variance recorded",
                            "no run recorded a grad_variance value", output_last=True, log=True)
_LAYER_FIGURES = {"entropy_sparsity.png": _ENTROPY, "staleness.png": _STALENESS,
                  "grad_variance.png": _GRAD_VARIANCE}


def plot_runs(run_dirs: Sequence[str | PathLike[str]], out: str | PathLike[str], *,
              metric: str | None = None, smooth: float = 0.0, x: str = "step") -> list[Path]:
    """Draw the figures of ``run_dirs`` as PNG files in the directory ``out`` (created if needed).

    * ``learning_curves.png``: ``metric`` (default ``test_accuracy`` or ``test_mse``) solid and its
      ``valid_*`` twin dashed, one colour per configuration, ±1 standard error over seeds; a second
      panel with ``train_loss``.
    * ``entropy_sparsity.png``: per-layer mean entropy (solid) and sparsity (dotted), one panel per
      configuration; not drawn if no run has stochastic hidden layers.
    * ``staleness.png``: per-layer-agent mean staleness (solid) and max (dotted), drawn only if runs
      recorded it.
    * ``grad_variance.png``: per-layer-agent gradient variance (``run.record_grad_variance``) on a
      log scale, drawn only if runs recorded it.

    ``smooth`` is the EMA factor applied to every seed before averaging (0 = none, the paper used
    0.9 and 0.99); ``x`` is ``step``, ``samples`` or ``wall_s``. Missing values (``null``) are gaps.
    A line with the same points as one drawn before it on the same axes (a Ray run and its local
    simulation) is drawn as open markers on that line. Returns the paths written.
    """
    _check_arguments(smooth, x)
    figures = make_figures(load_runs(run_dirs), metric=metric, smooth=smooth, x=x)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in FIGURES:
        if name in figures:
            written.append(_save(figures[name], out_dir / name))
        else:
            _skip(out_dir / name, _LAYER_FIGURES[name].skipped)
    return written


def make_figures(runs: Sequence[RunResults], *, metric: str | None = None, smooth: float = 0.0,
                 x: str = "step") -> dict[str, Figure]:
    """The figures :func:`plot_runs` writes, keyed by file name (``FIGURES``), without saving them;
    a figure that nothing in ``runs`` feeds is left out."""
    _check_arguments(smooth, x)
    metric = default_metric(runs, metric)
    lacking_x = [str(r.directory) for r in runs if x not in r.metrics]
    if lacking_x:
        raise DataError(f"x={x!r} is not recorded in the {METRICS_FILE} of: {', '.join(lacking_x)}")
    groups = group_runs(runs)
    figures = {"learning_curves.png": _learning_curves(groups, metric, smooth, x)}
    for name, spec in _LAYER_FIGURES.items():
        if any(_recorded(r, spec.columns[0]) for r in runs):
            figures[name] = _layer_figure(groups, spec, smooth, x)
    return figures


def _check_arguments(smooth: float, x: str) -> None:
    if x not in X_AXES:
        raise ConfigError(f"x must be one of {sorted(X_AXES)}, got {x!r}")
    if isinstance(smooth, bool) or not isinstance(smooth, int | float) or not 0.0 <= smooth < 1.0:
        raise ConfigError(f"smooth must be an EMA factor in [0, 1), got {smooth!r}")


def _recorded(run: RunResults, column: str) -> bool:
    """Whether per-layer ``column`` has at least one layer and one value that is not missing."""
    return run.has_layers(column) and bool(np.isfinite(run.metrics[column]).any())


def _skip(path: Path, reason: str) -> None:
    logger.info("%s not drawn: %s", path.name, reason)
    if path.exists():
        logger.warning("%s is left from an earlier plot and does not describe these runs", path)


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _averaged(groups: Sequence[Group]) -> bool:
    """Whether some configuration has more than one seed (so a line is a mean over seeds)."""
    return any(g.n > 1 for g in groups)


def _note(groups: Sequence[Group], smooth: float, each: str = "curve") -> str:
    """What a line shows, for a title: a mean ± s.e. only where a configuration has several seeds."""
    if not _averaged(groups):
        text = f"one run per {each}"
    elif any(g.n == 1 for g in groups):
        text = "mean ± 1 s.e. over seeds (where n > 1)"
    else:
        text = "mean ± 1 s.e. over seeds"
    return f"{text}, EMA {smooth:g}" if smooth else text


def _group_label(group: Group, averaged: bool) -> str:
    return f"{group.label}  [n={group.n}]" if averaged else group.label


def _x_axis(ax: Axes, x: str, averaged: bool = True) -> None:
    """Label the x axis; counts (steps, examples) get compact ticks (20k, 1.5M) that do not collide."""
    from matplotlib.ticker import EngFormatter, MaxNLocator

    ax.set_xlabel(X_AXES[x] if averaged else X_AXES[x].removesuffix(", mean over seeds"))
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 5, 10], integer=x != "wall_s"))
    if x != "wall_s":
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))


def _legend_below(fig: Figure, handles: list[Any], max_ncols: int) -> None:
    """A legend under the axes with as many columns (up to ``max_ncols``) as fit the figure's width."""
    renderer = fig.canvas.get_renderer()
    for ncols in range(max(1, min(max_ncols, len(handles))), 0, -1):
        legend = fig.legend(handles=handles, loc="outside lower center", ncols=ncols,
                            fontsize="small", frameon=False)
        if ncols == 1 or legend.get_window_extent(renderer).width <= 0.97 * fig.bbox.width:
            return
        legend.remove()


def _save(fig: Figure, path: Path) -> Path:
    # "tight" grows the image if some text still sticks out (a very long label): nothing is cut off
    fig.savefig(path, format="png", bbox_inches="tight", pad_inches=0.05)
    return path


def _colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


class _Lines:
    """The lines of one axes, added then drawn together. A line with the same points as one added
    before it (a Ray run and its local simulation, layer agents with equal staleness) would vanish
    under or hide that line, so it is drawn as open markers on it instead: a new shape for each such
    line, staggered along x so that repeats of one line do not cover each other."""

    def __init__(self, ax: Axes) -> None:
        self.ax = ax
        self.lines: list[tuple[Curve, str, dict[str, Any]]] = []
        self.repeats = 0

    def covers(self, curve: Curve) -> str | None:
        """The name of the first line added with the same points as ``curve``, else None."""
        return next((name for other, name, _ in self.lines if _same_points(curve, other)), None)

    def add(self, curve: Curve, colour: Any, linestyle: str = "-", label: str | None = None,
            name: str = "") -> None:
        """Add ``curve``: a line, or markers (the ``repeats``-th shape) if a line covers it."""
        style: dict[str, Any] = {"colour": colour, "linestyle": linestyle, "label": label}
        if self.covers(curve) is not None:
            style.update(linestyle="none", marker=self.repeats)
            self.repeats += 1
        self.lines.append((curve, name, style))

    def draw(self) -> None:
        """Draw every line added, in order."""
        for curve, _, style in self.lines:
            _draw(self.ax, curve, **style, repeats=self.repeats)


def _same_points(a: Curve, b: Curve) -> bool:
    """Whether two curves have the same x and, to 1e-6, the same finite y (gaps in the same places)."""
    return (a.x.shape == b.x.shape and a.mean.shape == b.mean.shape and np.array_equal(a.x, b.x)
            and bool(np.isfinite(a.mean).any())
            and np.allclose(a.mean, b.mean, rtol=1e-6, atol=1e-9, equal_nan=True))


def _draw(ax: Axes, curve: Curve, colour: Any, linestyle: str = "-", label: str | None = None,
          marker: int | None = None, repeats: int = 1) -> None:
    """The mean as a line and its ±1 s.e. band; with ``marker`` = k, open markers of the k-th shape
    instead of the line, on every ``max(T / 8, repeats)``-th point from point k."""
    style: dict[str, Any] = {}
    if marker is not None:
        every = max(1, math.ceil(len(curve.x) / 8), repeats)
        style = {"marker": _MARKERS[marker % len(_MARKERS)], "markevery": (marker % every, every),
                 "markerfacecolor": "none", "markersize": 6, "markeredgewidth": 1.3}
    ax.plot(curve.x, curve.mean, color=colour, linestyle=linestyle, linewidth=1.6, label=label,
            **style)
    if curve.se is not None:
        ax.fill_between(curve.x, curve.mean - curve.se, curve.mean + curve.se, color=colour,
                        alpha=0.2, linewidth=0)


def _marker_key() -> Any:
    """Legend entry explaining the open markers of :class:`_Lines`."""
    from matplotlib.lines import Line2D

    return Line2D([], [], color="0.2", linestyle="none", marker="o", markerfacecolor="none",
                  label="markers: same values as the line under them")


def _metric_label(column: str) -> str:
    split, _, base = column.partition("_")
    if split not in ("test", "valid", "train") or not base:
        split, base = "", column
    units = {"accuracy": "accuracy (fraction correct)", "ce": "cross-entropy (nats)",
             "mse": "mean squared error", "loss": "loss", "samples_per_s": "throughput (samples/s)"}
    text = units.get(base, base.replace("_", " "))
    return f"{split} {text}".strip() if split else text


def _learning_curves(groups: list[Group], metric: str, smooth: float, x: str) -> Figure:
    twin = "valid_" + metric.removeprefix("test_") if metric.startswith("test_") else None
    averaged = _averaged(groups)
    legend_rows = math.ceil(len(groups) / 2)
    fig = _new_figure(12.0, 4.6 + 0.28 * legend_rows)
    ax_metric, ax_loss = fig.subplots(1, 2)
    metric_lines, loss_lines = _Lines(ax_metric), _Lines(ax_loss)
    twins = {"drawn": 0, "same": 0}  # valid curves drawn, and left out as equal to the test curve
    for group, colour in zip(groups, _colours(len(groups)), strict=True):
        curve = group.curve(metric, smooth=smooth, x=x)
        label = _group_label(group, averaged)
        same = metric_lines.covers(curve)
        if same is not None:
            label += f"  (same curve as {same})"
        metric_lines.add(curve, colour, label=textwrap.fill(label, 80), name=group.label)
        if twin and group.has(twin):
            twin_curve = group.curve(twin, smooth=smooth, x=x)
            if _same_points(twin_curve, curve):
                twins["same"] += 1
            else:
                metric_lines.add(twin_curve, colour, "--")
                twins["drawn"] += 1
        if group.has("train_loss"):
            curve = group.curve("train_loss", smooth=smooth, x=x)
            if np.isfinite(curve.mean).any():
                loss_lines.add(curve, colour, name=group.label)
    metric_lines.draw()
    loss_lines.draw()
    _metric_axes(ax_metric, metric, twins, metric_lines.repeats > 0)
    _loss_axes(ax_loss, groups, drawn=bool(loss_lines.lines))
    for ax in (ax_metric, ax_loss):
        _x_axis(ax, x, averaged)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Learning curves — {_note(groups, smooth)}")
    handles, _ = ax_metric.get_legend_handles_labels()
    _legend_below(fig, handles, max_ncols=2)
    return fig


def _metric_axes(ax: Axes, metric: str, twins: dict[str, int], markers: bool) -> None:
    """Title, y label and the line-style key of the metric panel. A valid curve equal to its test
    curve is not drawn (the multiplexer's valid and test sets are the same patterns): the title
    says so."""
    from matplotlib.lines import Line2D

    name = _metric_label(metric)
    if not twins["drawn"]:
        ax.set_title(f"{name} (valid is the same)" if twins["same"] else name)
        ax.set_ylabel(name)
        return
    where = ", where it differs from test" if twins["same"] else ""
    ax.set_title(f"{name} (solid) and valid (dashed{where})")
    ax.set_ylabel(_metric_label(metric.removeprefix("test_")))
    keys = [Line2D([], [], color="0.3", label="test"),
            Line2D([], [], color="0.3", linestyle="--", label="valid")]
    if markers:
        keys.append(_marker_key())
    ax.legend(handles=keys, loc="best", fontsize="small", framealpha=0.8)


def _loss_axes(ax: Axes, groups: list[Group], drawn: bool) -> None:
    ax.set_title("training loss")
    tasks = {run.task for group in groups for run in group.runs}
    ax.set_ylabel({frozenset({"classification"}): "training loss (cross-entropy, nats)",
                   frozenset({"regression"}): "training loss (squared error)"}
                  .get(frozenset(tasks), "training loss"))
    if not drawn:
        ax.text(0.5, 0.5, "no training loss recorded", ha="center", va="center",
                transform=ax.transAxes, color="0.4")


def _layer_names(spec: _LayerSpec, agents: int) -> list[str]:
    """Legend names of ``agents`` layer agents (the last is the output agent if ``output_last``)."""
    names = [f"{spec.layer} {i}" for i in range(agents)]
    if spec.output_last and agents:
        names[-1] = "output agent"
    return names


def _layer_colour(index: int, agents: int, most: int, spec: _LayerSpec) -> int:
    """Colour index of agent ``index`` of ``agents`` when the deepest network has ``most``: the
    output agent of every network shares the last colour."""
    return most - 1 if spec.output_last and index == agents - 1 else index


def _layer_figure(groups: list[Group], spec: _LayerSpec, smooth: float, x: str) -> Figure:
    """One panel per group: one colour per layer (numbered from 0, as the run names them),
    ``spec.columns[0]`` solid and ``spec.columns[1]`` dotted, ±1 s.e. over seeds."""
    from matplotlib.lines import Line2D

    solid_col, dotted_col = spec.columns
    averaged = _averaged(groups)
    ncols = min(3, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    fig = _new_figure(4.6 * ncols + 0.6, 3.4 * nrows + 1.0)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)).ravel()
    most = max((g.curve(solid_col).mean.shape[1] for g in groups if g.has(solid_col)), default=0)
    colours = _colours(most)
    repeats = 0
    for ax, group in zip(axes, groups, strict=False):
        title = _group_label(group, averaged)
        ax.set_title(textwrap.fill(title, 48), fontsize="small")
        ax.grid(alpha=0.3)
        solid = group.curve(solid_col, smooth=smooth, x=x) if group.has(solid_col) else None
        if solid is None or not np.isfinite(solid.mean).any():
            ax.text(0.5, 0.5, spec.empty, ha="center", va="center", transform=ax.transAxes, color="0.4")
            continue
        dotted = (group.curve(dotted_col, smooth=smooth, x=x)
                  if dotted_col is not None and group.has(dotted_col) else None)
        lines = _Lines(ax)
        agents = solid.mean.shape[1]
        for i in range(agents):
            colour = colours[_layer_colour(i, agents, most, spec)]
            lines.add(_layer(solid, i), colour)
            if dotted is not None and i < dotted.mean.shape[1]:
                lines.add(_layer(dotted, i), colour, ":")
        lines.draw()
        if spec.log:
            ax.set_yscale("log")
        repeats += lines.repeats
    for ax in axes[len(groups):]:
        ax.set_visible(False)
    for i, ax in enumerate(axes[:len(groups)]):
        if i + ncols >= len(groups):  # no panel below: this one carries the x axis
            _x_axis(ax, x, averaged)
            ax.xaxis.set_tick_params(labelbottom=True)
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel(textwrap.fill(spec.ylabel, 40), fontsize="small")
    handles = [Line2D([], [], color=colours[_layer_colour(i, most, most, spec)], label=name)
               for i, name in enumerate(_layer_names(spec, most))]
    if dotted_col is not None:
        handles += [Line2D([], [], color="0.2", label=spec.styles[0]),
                    Line2D([], [], color="0.2", linestyle=":", label=spec.styles[1])]
    if repeats:
        handles.append(_marker_key())
    fig.suptitle(textwrap.fill(f"{spec.title} — {_note(groups, smooth, 'panel')}", 52 * ncols))
    _legend_below(fig, handles, max_ncols=6)
    return fig


def _layer(curve: Curve, layer: int) -> Curve:
    se = None if curve.se is None else curve.se[:, layer]
    return Curve(x=curve.x, mean=curve.mean[:, layer], se=se, n=curve.n)
