"""Study ``asynchrony``: what asynchrony costs a coagent network, and what the staleness
correction buys back. Not a claim of the paper (its networks are synchronous): our own study of
the knobs the simulator adds (DESIGN.md, "Asynchrony"), every setting of ``coagents demo`` run on
a harder task and over seeds.

The network: the 11-bit multiplexer (3 address bits), two hidden layers of 64 Bernoulli coagents,
REINFORCE with the EMA baseline (§3.2), RMSprop 0.01, batch 32, greedy evaluation on all 2,048
patterns, ``run.online_metrics`` on. The settings: batches in flight with late rewards
(``backend.window`` W, ``backend.reward_delay`` W - 1), layer agents stepping at their own clock
rates (``backend.update_every``), agents that fire on a random fraction of stream-steps
(``backend.fire``), per-layer reward delays, and the truncated importance ratio of the staleness
correction (``network.importance_cap``). Per setting: final and area-under-the-curve test
accuracy, prequential (test-then-train) accuracy, per-agent staleness, firing fraction and
importance ratio, and a Welch test of each setting against the synchronous network.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from async_coagents.experiment.demo import ASYNCHRONY, SETTINGS
from async_coagents.study.report import (
    Report,
    compare,
    draw_curve,
    legend,
    new_figure,
    p_value,
    shown,
)
from async_coagents.study.spec import Arm, Budget, Study

SIGNIFICANT = 0.05
BASE: dict[str, object] = {"network.hidden": "[64, 64]", "run.online_metrics": "true"}
#: The arm every other is compared with.
SYNCHRONOUS = "synchronous"
#: Pairs (without, with) the staleness correction.
CORRECTED = (("w32-delay31", "w32-delay31-cap1"),)


def _name(label: str) -> str:
    return label.replace(",", "").replace(" ", "-").replace("=", "")


def _setting_arms() -> list[Arm]:
    """The arms of the demo's two sections, each under the demo's own label; ``fire p=1`` is the
    synchronous network again and is left out."""
    arms = [Arm(_name(label), "multiplexer",
                {**BASE, "backend.window": window, "backend.reward_delay": delay,
                 "backend.update_every": str(clocks)},
                {"setting": label, "group": "windows and clock rates"})
            for label, window, delay, clocks in SETTINGS]
    for label, name, overrides in ASYNCHRONY:
        if name == "fire-p1":
            continue
        settings = dict(o.split("=", 1) for o in overrides)
        group = "firing" if name.startswith("fire") else "delays and staleness correction"
        arms.append(Arm(name, "multiplexer", {**BASE, **settings},
                        {"setting": label, "group": group}))
    return arms


class Asynchrony(Study):
    name = "asynchrony"
    title = "Asynchrony: batches in flight, late rewards, clock rates, firing, staleness correction"
    summary = ("Our own study (the paper's networks are synchronous): every setting of "
               "`coagents demo` on the 11-bit multiplexer, two hidden layers of 64 Bernoulli "
               "coagents, REINFORCE + EMA baseline, RMSprop 0.01, batch 32, over seeds. Window W "
               "with reward delay W − 1 means each layer updates on the reward of a batch it "
               "forwarded W − 1 of its own steps earlier (its staleness); `layer0 every 4` steps "
               "that layer once per 4 batches on their summed gradient; `fire p` lets each layer "
               "agent act on a random fraction p of the stream and hold its previous output "
               "elsewhere (on this i.i.d. stream, the output of another example); `cap 1` "
               "weights each stale "
               "update by the truncated importance ratio of the current to the behaviour "
               "policy; the greedy evaluation scores every pattern.")
    metrics = ("test_accuracy", "online_accuracy", "prequential_accuracy", "staleness_mean",
               "fired", "importance_mean", "importance_truncated")
    curve_metrics = ("test_accuracy", "online_accuracy", "staleness_mean", "fired",
                     "importance_mean", "importance_truncated")
    replicas = 20
    budgets: ClassVar[dict[str, Budget]] = {
        "full": Budget("full", 20, "20,000 updates per run, evaluated every 500",
                       {"run.updates": 20000, "run.eval_every": 500}),
        "quick": Budget("quick", 2, "200 updates per run, evaluated every 50 (a smoke test)",
                        {"run.updates": 200, "run.eval_every": 50}),
    }
    default_budget = "full"

    def arms(self, budget: Budget) -> list[Arm]:
        return _setting_arms()

    def write_report(self, data, report: Report) -> None:
        sync = data.arms.get(SYNCHRONOUS)
        report.heading("Accuracy and staleness per setting")
        rows, below = [], []
        for arm in _setting_arms():
            a = data.arms.get(arm.name)
            if a is None or not a.n:
                continue
            test = compare(a, sync, "test_accuracy", "auc") if (
                sync is not None and sync.n and a is not sync) else None
            if test is not None and test.difference < 0 and test.p < SIGNIFICANT:
                below.append(arm.labels["setting"])
            rows.append([arm.labels["setting"], a.n, shown(a.final.get("test_accuracy", [])),
                         shown(a.auc.get("test_accuracy", [])),
                         shown(a.final.get("prequential_accuracy", [])),
                         "–" if test is None else f"{test.difference:+.4f}",
                         "–" if test is None else p_value(test),
                         _per_agent(a, "staleness_mean", 1), _per_agent(a, "fired", 2),
                         _per_agent(a, "importance_mean", 3),
                         _per_agent(a, "importance_truncated", 2)])
        report.table(["setting", "seeds", "final test accuracy", "test accuracy AUC",
                      "prequential accuracy", "AUC − synchronous", "p", "staleness per agent",
                      "fired per agent", "importance ratio per agent", "truncated per agent"],
                     rows, numeric_from=1)
        report.text("Mean ± standard error over seeds. AUC: the mean of the test-accuracy curve "
                    "over the run; prequential: the accuracy of each training batch before the "
                    "network learned from it, over the whole run; p: Welch's two-sided test of "
                    "the AUC against the synchronous network. The per-agent columns (layer 0, "
                    "layer 1, output; – where an agent has no such figure) are the means over "
                    "the run and over seeds of each evaluation interval's figure: staleness in "
                    "parameter steps between a batch's forward and its update, the fraction of "
                    "stream-steps the agent fired on, the mean importance ratio before "
                    "truncation and the fraction of ratios the cap truncated.")
        self._figure(data, report)
        words = "; ".join(f"*{label}*" for label in below) or "none"
        report.text(f"**Finding.** Settings whose test-accuracy AUC is below the synchronous "
                    f"network's at p < {SIGNIFICANT}: {words}.")
        for without, with_cap in CORRECTED:
            a, b = data.arms.get(with_cap), data.arms.get(without)
            if a is None or b is None or not a.n or not b.n:
                continue
            test = compare(a, b, "test_accuracy", "auc")
            report.text(f"**Staleness correction.** *{a.arm.labels['setting']}* against "
                        f"*{b.arm.labels['setting']}*: test-accuracy AUC difference "
                        f"{test.difference:+.4f} (Welch t = {test.t:.2f}, p {p_value(test)}); "
                        + ("the correction helps." if test.difference > 0 and
                           test.p < SIGNIFICANT else
                           "the correction hurts." if test.difference < 0 and
                           test.p < SIGNIFICANT else "no significant difference."))

    def _figure(self, data, report: Report) -> None:
        from matplotlib.ticker import MaxNLocator

        groups = list(dict.fromkeys(a.labels["group"] for a in _setting_arms()))
        figure, axes = new_figure(len(groups), width=3.2)
        for ax, group in zip(axes, groups, strict=True):
            arms = [a for a in _setting_arms() if a.labels["group"] == group]
            if group != "windows and clock rates":
                arms = [a for a in _setting_arms() if a.name == SYNCHRONOUS] + arms
            for i, arm in enumerate(arms):
                a = data.arms.get(arm.name)
                if a is not None and a.n:
                    draw_curve(ax, a, "test_accuracy", arm.labels["setting"], colour=f"C{i}")
            ax.set_title(group, fontsize=9)
            ax.set_xlabel("updates", fontsize=8)
            ax.xaxis.set_major_locator(MaxNLocator(4))
            ax.tick_params(labelsize=7)
            legend(ax, fontsize=5, loc="lower right")
        axes[0].set_ylabel("test accuracy", fontsize=8)
        report.figure("test_accuracy.png", figure,
                      "Greedy test accuracy on the 11-bit multiplexer, mean ± s.e. over seeds")


def _per_agent(arm, metric: str, digits: int) -> str:
    """Per agent, the mean over the run and over seeds of ``metric``'s interval figures."""
    cells = []
    for column in arm.layers(metric):
        values = arm.curves[column]
        finite = values[np.isfinite(values)]
        cells.append("–" if not len(finite) else f"{float(np.mean(finite)):.{digits}f}")
    if not cells or all(c == "–" for c in cells):
        return "–"
    return " / ".join(cells)

