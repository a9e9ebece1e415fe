"""The Markdown report of a study, written from its compact results alone (no number is typed by
hand): the budget and the wall time it took, then what the study's module adds — tables of mean
± standard error over seeds, Welch tests, figures (small PNGs beside the report) — each preceded
by the command that produced it, and a verdict per claim, also saved as ``verdicts.json`` for the
results page (:mod:`async_coagents.study.page`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from async_coagents.experiment.results import mean_se
from async_coagents.experiment.rundir import write_json, write_text
from async_coagents.study import compact
from async_coagents.study.welch import Welch, welch

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from async_coagents.study.compact import ArmData
    from async_coagents.study.runner import StudyPlan

__all__ = ["ACCURACY_HEAD", "ACCURACY_NOTE", "REPORT", "VERDICTS", "Report", "accuracy_cells",
           "compare", "draw_curve", "draw_entropy_sparsity", "legend",
           "new_figure", "p_value", "shown", "verdict_word", "write_report"]

REPORT = "report.md"
#: How a report names the datasets of its runs.
DATASET_NAMES = {"fashion-mnist": "Fashion-MNIST (the paper used MNIST; `--dataset mnist` runs "
                                  "the study on it)",
                 "mnist": "MNIST, the paper's", "multiplexer": "the multiplexer (generated)",
                 "correlated": "the paper's correlated stream (generated)"}
VERDICTS = "verdicts.json"
VERDICT_WORDS = ("reproduced", "partly reproduced", "not reproduced", "not tested yet")


class Report:
    """The report being written: Markdown lines, the figures saved so far, the verdicts."""

    def __init__(self, plan: StudyPlan, data: compact.StudyData) -> None:
        self.plan, self.data = plan, data
        self.lines: list[str] = []
        self.verdicts: list[dict] = []

    # ---- what a study adds ----------------------------------------------------------------------
    def text(self, *paragraphs: str) -> None:
        for paragraph in paragraphs:
            self.lines += [paragraph, ""]

    def heading(self, title: str, level: int = 3) -> None:
        self.lines += [f"{'#' * level} {title}", ""]

    def command(self) -> None:
        """The command that produced what follows (and regenerates it)."""
        self.lines += ["```", self.plan_command(), "```", ""]

    def table(self, head: Sequence[str], rows: Sequence[Sequence[object]], *,
              numeric_from: int = 1) -> None:
        """A Markdown table preceded by its command; columns from ``numeric_from`` on are
        right-aligned."""
        self.command()
        align = ["---" if i < numeric_from else "---:" for i in range(len(head))]
        self.lines += [_row(head), _row(align)] + [_row([str(c) for c in r]) for r in rows] + [""]

    def figure(self, name: str, figure: Figure, caption: str) -> None:
        """Save ``figure`` as ``name`` beside the report and show it, preceded by its command."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(figure)
        self.plan.results.mkdir(parents=True, exist_ok=True)
        figure.savefig(self.plan.results / name, dpi=80)
        self.command()
        self.lines += [f"![{caption}]({name})", "", f"*{caption}*", ""]

    def verdict(self, claim: str, verdict: str, evidence: str) -> None:
        """The verdict on ``claim``: one of :data:`VERDICT_WORDS`, with its evidence."""
        if verdict not in VERDICT_WORDS:
            raise ValueError(f"verdict must be one of {VERDICT_WORDS}, got {verdict!r}")
        self.verdicts.append({"study": self.plan.study.name, "claim": claim,
                              "verdict": verdict, "evidence": evidence})
        self.lines += [f"**Verdict — {claim}: {verdict}.** {evidence}", ""]

    # ---- the command ----------------------------------------------------------------------------
    def plan_command(self) -> str:
        plan = self.plan
        parts = ["coagents study", plan.study.name, "--budget", plan.budget.name]
        if plan.seeds != plan.budget.seeds:
            parts += ["--seeds", str(plan.seeds)]
        if plan.dataset is not None:
            parts += ["--dataset", plan.dataset]
        parts += ["--results", _shown_path(plan.results)]
        return " ".join(parts)


def write_report(plan: StudyPlan) -> Path:
    """Write ``report.md`` (and its figures and ``verdicts.json``) into the plan's compact
    results; returns its path."""
    data = compact.read_study(plan.results, plan.arms)
    report = Report(plan, data)
    study = plan.study
    report.lines += [f"## {study.title}", "", study.summary, ""]
    _budget_lines(report)
    if not data.arms:
        report.text("No run is recorded yet.")
    else:
        study.write_report(data, report)
    plan.results.mkdir(parents=True, exist_ok=True)
    path = plan.results / REPORT
    write_text(path, "\n".join(report.lines).rstrip() + "\n")
    write_json(plan.results / VERDICTS, {"study": study.name, "title": study.title,
                                         "budget": plan.budget.name, "verdicts": report.verdicts})
    return path


def _budget_lines(report: Report) -> None:
    plan, data = report.plan, report.data
    sessions = data.meta.get("sessions", [])
    seconds = sum(s.get("wall_s", 0) for s in sessions)
    recorded = sum(a.n for a in data.arms.values())
    diverged = sum(len(a.diverged) for a in data.arms.values())
    have = {a.arm.name: a.n + len(a.diverged) for a in data.arms.values()}
    left = sum(max(0, plan.seeds - have.get(arm.name, 0)) for arm in plan.arms)
    report.text(
        f"Budget **{plan.budget.name}**: {plan.budget.description}; {plan.seeds} seed(s) per "
        f"arm, {len(plan.arms)} arms. Recorded: {recorded} completed run(s)"
        + (f" and {diverged} diverged" if diverged else "")
        + " (the tables use every recorded seed of an arm: see their seeds columns).",
        f"Wall time on this machine: {seconds:,.0f} s ({seconds / 3600:.2f} h) over "
        f"{len(sessions)} session(s) of `coagents study` "
        f"({', '.join(sorted({s.get('executor', '?') for s in sessions})) or 'none'}).")
    datasets = sorted({str(a.config.get("data", {}).get("dataset")) for a in data.arms.values()
                       if a.config})
    if datasets:
        report.text("Dataset of the recorded runs: " + ", ".join(
            DATASET_NAMES.get(d, d) for d in datasets) + ".")
    if left:
        report.text(f"**Incomplete:** {left} run(s) of {plan.seeds} seed(s) per arm are not "
                    "recorded yet; the same command continues the study.")
    short = [arm.name for arm in plan.arms if have.get(arm.name, 0) < plan.budget.seeds]
    if plan.seeds < plan.budget.seeds and short:
        report.text(f"**Incomplete:** {len(short)} arm(s) have fewer than the budget's "
                    f"{plan.budget.seeds} seeds; the same command with --seeds "
                    f"{plan.budget.seeds} continues the study.")


# ---- helpers the studies share -----------------------------------------------------------------
def shown(values: np.ndarray | Sequence[float], digits: int = 4) -> str:
    """``mean ± s.e.`` of the finite ``values`` (``mean`` alone for one value, ``–`` for none)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return "–"
    mean, se = mean_se(values)
    return f"{mean:.{digits}g}" if se is None else f"{mean:.{digits}g} ± {se:.2g}"


#: What the accuracy tables of the Fashion-MNIST studies show, in words under each.
ACCURACY_NOTE = ("Mean ± standard error over seeds; final: the last evaluation; AUC: the mean of "
                 "the curve over training (trapezoid rule).")
ACCURACY_HEAD = ("seeds", "final train accuracy", "final test accuracy", "train accuracy AUC")


def accuracy_cells(arm: ArmData) -> list[object]:
    """The cells of :data:`ACCURACY_HEAD` for ``arm``."""
    return [arm.n, shown(arm.final.get("train_accuracy", [])),
            shown(arm.final.get("test_accuracy", [])), shown(arm.auc.get("train_accuracy", []))]


def verdict_word(held: int, tested: int) -> str:
    """``reproduced`` when every one of ``tested`` comparisons held, ``partly reproduced`` when
    some did, else ``not reproduced``."""
    return "reproduced" if held == tested else "partly reproduced" if held else "not reproduced"


def p_value(test: Welch) -> str:
    """The p-value in words for a table cell."""
    if math.isnan(test.p):
        return "–"
    return "< 1e-4" if test.p < 1e-4 else f"{test.p:.3g}"


def compare(a: ArmData, b: ArmData, metric: str, statistic: str = "final") -> Welch:
    """Welch's test of ``a`` against ``b`` on ``metric``'s ``final`` or ``auc`` values."""
    values = (lambda arm: arm.final.get(metric, np.zeros(0))) if statistic == "final" else (
        lambda arm: arm.auc.get(metric, np.zeros(0)))
    return welch(values(a), values(b))


def new_figure(panels: int, *, width: float = 3.4, height: float = 2.8) -> tuple[Figure,
                                                                                 list[Axes]]:
    """A figure of ``panels`` side by side (object-oriented Matplotlib, no pyplot state)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width * panels, height), layout="constrained")
    axes = figure.subplots(1, panels, squeeze=False)[0]
    return figure, list(axes)


def draw_curve(ax: Axes, arm: ArmData, column: str, label: str, *, scale: float = 1.0,
               colour: object = None, linestyle: str = "-") -> None:
    """Mean ± s.e. over seeds of ``column`` against updates."""
    values = arm.curves.get(column)
    if values is None or arm.n == 0:
        return
    with warnings.catch_warnings():  # a step no seed has a value at (an interval figure at
        warnings.simplefilter("ignore", RuntimeWarning)  # step 0) is drawn as a gap
        mean = np.nanmean(values, axis=0) * scale
        se = np.nanstd(values, axis=0, ddof=1) / math.sqrt(arm.n) * scale if arm.n > 1 else None
    line, = ax.plot(arm.steps, mean, label=label, color=colour, linestyle=linestyle, lw=1.2)
    if se is not None:
        ax.fill_between(arm.steps, mean - se, mean + se, color=line.get_color(), alpha=0.25,
                        lw=0)


def legend(ax: Axes, **options) -> None:
    """The legend of ``ax``, when it has a labelled line (a panel of unrecorded arms has none)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**options)


def draw_entropy_sparsity(ax: Axes, arm: ArmData, title: str) -> None:
    """One panel of per-layer mean entropy per unit (solid) and sparsity (dotted), mean ± s.e."""
    for layer, column in enumerate(arm.layers("entropy")):
        draw_curve(ax, arm, column, f"entropy, layer {layer}", colour=f"C{layer}")
    for layer, column in enumerate(arm.layers("sparsity")):
        draw_curve(ax, arm, column, f"sparsity, layer {layer}", colour=f"C{layer}",
                   linestyle=":")
    ax.set_title(title, fontsize=8)
    ax.set_xlabel("updates", fontsize=8)
    ax.set_ylim(-0.01, 1)
    ax.tick_params(labelsize=7)


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def _shown_path(path: Path) -> str:
    """``path`` as the user would type it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
