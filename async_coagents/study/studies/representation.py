"""Study ``representation``: the policy parameterisation of each agent (``paper_method.md`` §6.3
``representation``, §2.2): three hidden layers of U categorical coagents with K actions each, the
state passed on the symmetric 2a/(K-1) - 1 (§2.2 mode 3), REINFORCE with the raw reward (§3.10),
RMSprop 2^-11, batch 32, for K in {2, 5, 9, 17} and U in {2, 4, ..., 512}; the statistic is the
paper's plot (§7 ``sensitivity_curve_unitslayer_numactions``): the mean train accuracy over the
last 20 of 100 epochs, here over the last fifth of the run's evaluations at every budget. The
thesis reports it as "a study into the policy parameterization of each agent" without a claim
to test, so the report states what the runs show and gives no verdict.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from async_coagents.experiment.results import mean_se
from async_coagents.study.report import Report, legend, new_figure
from async_coagents.study.spec import Arm, Budget, Study

ACTIONS = (2, 5, 9, 17)
UNITS = tuple(2 ** k for k in range(1, 10))  # 2 .. 512
QUICK_UNITS = (2, 8)
#: The statistic covers the evaluations after this fraction of the run (the last 20 of 100 epochs).
LAST = 0.8


def arm_name(actions: int, units: int) -> str:
    return f"k{actions}-u{units}"


def last_fifth(steps: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per seed (a row of ``values (n, T)``), the mean over the evaluations at steps after
    :data:`LAST` of the last step."""
    if not len(steps):
        return np.zeros(len(values))
    late = steps > LAST * steps[-1]
    return np.nanmean(values[:, late], axis=1)


class Representation(Study):
    name = "representation"
    title = "Units per layer x actions per unit: the policy parameterisation (§6.3 representation)"
    summary = ("Three hidden layers of U categorical coagents of K actions each (the state "
               "passed on: 2a/(K − 1) − 1), REINFORCE with the raw reward, RMSprop 2^-11, batch "
               "32, greedy evaluation; K in {2, 5, 9, 17}, U in {2, 4, ..., 512}. The statistic "
               "is the paper's: mean train accuracy over the last fifth of training (its last 20 "
               "of 100 epochs). No claim of the paper to test: the thesis calls it a study of "
               "the policy parameterisation.")
    metrics = ("train_accuracy", "test_accuracy", "entropy")
    curve_metrics = ("train_accuracy", "test_accuracy")
    budgets: ClassVar[dict[str, Budget]] = {
        "paper": Budget("paper", 1, "the paper's 100 epochs (156,300 updates) and its one seed",
                        {"run.epochs": 100}),
        "reduced": Budget("reduced", 1, "10 epochs (15,630 updates) per run, one seed",
                          {"run.epochs": 10}),
        "quick": Budget("quick", 2, "U in {2, 8}, 40 updates per run, evaluated every 10 (a "
                                    "smoke test)",
                        {"run.epochs": 0, "run.updates": 40, "run.eval_every": 10}),
    }

    def arms(self, budget: Budget) -> list[Arm]:
        units = QUICK_UNITS if budget.name == "quick" else UNITS
        return [Arm(arm_name(k, u), "fashion-reinforce",
                    {"network.hidden": str([u] * 3), "network.units": '"categorical"',
                     "network.n_actions": k, "network.normalisation": '"symmetric"'},
                    {"K": k, "U": u})
                for k in ACTIONS for u in units]

    def write_report(self, data, report: Report) -> None:
        arms = self.arms(report.plan.budget)
        units = sorted({a.labels["U"] for a in arms})
        table: dict[tuple[int, int], tuple[float, float | None, int]] = {}
        for arm in arms:
            a = data.arms.get(arm.name)
            if a is None or not a.n or "train_accuracy" not in a.curves:
                continue
            mean, se = mean_se(last_fifth(a.steps, a.curves["train_accuracy"]))
            table[(arm.labels["K"], arm.labels["U"])] = (mean, se, a.n)
        report.heading("Mean train accuracy over the last fifth of training")
        rows = [[f"K = {k}"] + [_cell(table.get((k, u))) for u in units] for k in ACTIONS]
        report.table(["actions per unit"] + [f"U = {u}" for u in units], rows, numeric_from=1)
        report.text("Each cell: the mean over seeds (± s.e. with more than one seed) of each "
                    "run's mean greedy train accuracy over its evaluations in the last fifth of "
                    "training; – where the arm is not recorded.")
        self._figure(report, table, units)
        best = []
        for u in units:
            here = {k: table[(k, u)][0] for k in ACTIONS if (k, u) in table}
            if here:
                k = max(here, key=here.get)
                best.append(f"U = {u}: K = {k} ({here[k]:.3f})")
        if best:
            report.text("**What the runs show.** The best K at each U: " + "; ".join(best) + ".")

    def _figure(self, report: Report, table: dict, units: list[int]) -> None:
        if not table:
            return
        figure, (ax,) = new_figure(1, width=4.2, height=3.0)
        for i, k in enumerate(ACTIONS):
            xs = [u for u in units if (k, u) in table]
            if not xs:
                continue
            means = np.array([table[(k, u)][0] for u in xs])
            ses = np.array([table[(k, u)][1] or 0.0 for u in xs])
            ax.errorbar(xs, means, yerr=ses, label=f"K = {k}", color=f"C{i}", marker="o",
                        ms=3, lw=1.2, capsize=2)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("units per layer U", fontsize=8)
        ax.set_ylabel("train accuracy, last fifth", fontsize=8)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=7)
        legend(ax, fontsize=6)
        report.figure("units_actions.png", figure,
                      "Mean train accuracy over the last fifth of training against units per "
                      "layer, one line per number of actions K")


def _cell(entry: tuple[float, float | None, int] | None) -> str:
    if entry is None:
        return "–"
    mean, se, _ = entry
    return f"{mean:.3f}" if se is None or not math.isfinite(se) else f"{mean:.3f} ± {se:.2g}"
