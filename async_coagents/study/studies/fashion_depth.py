"""Study ``fashion-depth``: depth and variance reduction on Fashion-MNIST (``paper_method.md``
§6.3 ``discrete_compare_all``): 1 and 2 hidden layers of 64 Bernoulli units trained by REINFORCE
(§3.1), REINFORCE with the EMA baseline (§3.2), straight-through (§2.7) and backprop (§2.8),
RMSprop 2^-11, batch 32, 50 epochs, 5 seeds; train and test accuracy curves, per-layer entropy and
sparsity over training (§4.3, §4.4). Claim 2 of §8: on-policy REINFORCE, even with variance
reduction, learns suboptimal solutions.
"""

from __future__ import annotations

from typing import ClassVar

from async_coagents.study.report import (
    ACCURACY_HEAD,
    ACCURACY_NOTE,
    Report,
    accuracy_cells,
    compare,
    draw_curve,
    draw_entropy_sparsity,
    legend,
    new_figure,
    p_value,
    verdict_word,
)
from async_coagents.study.spec import Arm, Budget, Study

LEARNERS = {"reinforce": "fashion-reinforce", "baseline": "fashion-baseline",
            "straight-through": "fashion-straight-through", "backprop": "fashion-backprop"}
COAGENT_LEARNERS = ("reinforce", "baseline")
DEPTHS = (1, 2)
SIGNIFICANT = 0.05


class FashionDepth(Study):
    name = "fashion-depth"
    title = "Depth and variance reduction (§6.3 discrete_compare_all)"
    summary = ("1 and 2 hidden layers of 64 Bernoulli coagents trained by REINFORCE and by "
               "REINFORCE with the EMA baseline, against straight-through and backprop networks "
               "of the same shape (RMSprop 2^-11, batch 32, greedy evaluation). The paper's claim "
               "(§8, claim 2): on-policy REINFORCE, even with variance reduction, learns "
               "suboptimal solutions.")
    metrics = ("train_accuracy", "test_accuracy", "train_loss", "entropy", "sparsity")
    budgets: ClassVar[dict[str, Budget]] = {
        "paper": Budget("paper", 5, "the paper's 50 epochs (78,150 updates) per run"),
        "short": Budget("short", 3, "10 epochs per run", {"run.epochs": 10}),
        "quick": Budget("quick", 2, "40 updates per run, evaluated every 20 (a smoke test)",
                        {"run.epochs": 0, "run.updates": 40, "run.eval_every": 20}),
    }

    def arms(self, budget: Budget) -> list[Arm]:
        return [Arm(f"{learner}-{depth}layer", config, {"network.hidden": str([64] * depth)},
                    {"learner": learner, "hidden layers": depth})
                for depth in DEPTHS for learner, config in LEARNERS.items()]

    def write_report(self, data, report: Report) -> None:
        arms = data.arms
        report.heading("Final accuracy")
        rows = []
        for depth in DEPTHS:
            for learner in LEARNERS:
                arm = arms.get(f"{learner}-{depth}layer")
                if arm is None:
                    continue
                rows.append([learner, depth, *accuracy_cells(arm)])
        report.table(["learner", "hidden layers", *ACCURACY_HEAD], rows, numeric_from=1)
        report.text(ACCURACY_NOTE)

        report.heading("Welch tests: coagent networks against backprop and straight-through")
        tests, below = [], {}
        for depth in DEPTHS:
            for learner in COAGENT_LEARNERS:
                a = arms.get(f"{learner}-{depth}layer")
                for other in ("backprop", "straight-through"):
                    b = arms.get(f"{other}-{depth}layer")
                    if a is None or b is None:
                        continue
                    test = compare(a, b, "train_accuracy")
                    tests.append([f"{learner} vs {other}", depth, f"{test.difference:+.4f}",
                                  f"{test.t:.2f}", f"{test.dof:.1f}", p_value(test)])
                    if other == "backprop":
                        below[(learner, depth)] = test.difference < 0 and test.p < SIGNIFICANT
        report.table(["comparison (final train accuracy)", "hidden layers", "difference",
                      "t", "dof", "p (two-sided)"], tests, numeric_from=1)

        self._curves(data, report)
        self._entropy(data, report)

        if not below:
            report.verdict("REINFORCE, even with variance reduction, learns suboptimal solutions",
                           "not tested yet", "The coagent or backprop arms are not recorded.")
            return
        held = [k for k, v in below.items() if v]
        words = ", ".join(f"{learner} with {depth} layer(s)" for learner, depth in held) or "none"
        verdict = verdict_word(len(held), len(below))
        report.verdict(
            "REINFORCE, even with variance reduction, learns suboptimal solutions", verdict,
            f"Coagent arms whose final train accuracy is below backprop's at p < {SIGNIFICANT} "
            f"(Welch): {words}, of {len(below)} compared. Straight-through is in the table for "
            "reference.")

    def _curves(self, data, report: Report) -> None:
        figure, axes = new_figure(len(DEPTHS))
        for ax, depth in zip(axes, DEPTHS, strict=True):
            for i, learner in enumerate(LEARNERS):
                arm = data.arms.get(f"{learner}-{depth}layer")
                if arm is None:
                    continue
                colour = f"C{i}"
                draw_curve(ax, arm, "train_accuracy", f"{learner} train", colour=colour)
                draw_curve(ax, arm, "test_accuracy", f"{learner} test", colour=colour,
                           linestyle="--")
            ax.set_title(f"{depth} hidden layer(s) of 64", fontsize=9)
            ax.set_xlabel("updates", fontsize=8)
            ax.set_ylabel("accuracy", fontsize=8)
            ax.tick_params(labelsize=7)
        legend(axes[-1], fontsize=6, loc="lower right")
        report.figure("accuracy.png", figure, "Train (solid) and test (dashed) accuracy, mean ± "
                      "s.e. over seeds")

    def _entropy(self, data, report: Report) -> None:
        panels = [(learner, depth) for depth in DEPTHS for learner in COAGENT_LEARNERS
                  if f"{learner}-{depth}layer" in data.arms]
        if not panels:
            return
        figure, axes = new_figure(len(panels), width=2.8)
        for ax, (learner, depth) in zip(axes, panels, strict=True):
            arm = data.arms[f"{learner}-{depth}layer"]
            draw_entropy_sparsity(ax, arm, f"{learner}, {depth} layer(s)")
            draw_curve(ax, arm, "train_accuracy", "train accuracy", colour="black")
        legend(axes[-1], fontsize=6, loc="center right")
        report.figure("entropy_sparsity.png", figure, "Per-layer mean entropy per unit in nats "
                      "(solid), sparsity (dotted) and train accuracy (black), mean over seeds")
