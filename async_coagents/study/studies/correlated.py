"""Study ``correlated``: coagent networks against backprop on the correlated stream
(``paper_method.md`` §5.3, §6.5): the 8 built-in ``correlated-*`` configs of the paper's
``even_longer`` runs (d in {0, 0.95, 0.98, 1}; a 1 x 50 Gaussian ReLU coagent network with the EMA
baseline, RMSprop; a 1 x 50 ReLU backprop MLP, Adam; M = 200 mean-blocks of S = 1,600 batches of
32, one pass, 320,000 updates), 200 seeds each, and the same stream ten times shorter (M = 20,
32,000 updates, evaluated every 160 updates as the paper's cadence ceil(MS/200) says). Test-MSE
curves (mean ± s.e.), final MSE and its area under the curve, a Welch test per d. Claim 4 of §8:
networks of agents can be more robust to correlated samples when learning online.

The coagent arms draw their Gaussian noise by Box–Muller (``network.normals``; the same
distribution as the default ziggurat, 2-3x faster) and the seeds of a configuration run as
replicas of one network (``sweep.replicas``): the numbers are those of separate runs.
"""

from __future__ import annotations

from typing import ClassVar

from async_coagents.experiment.learning_bench import EVEN_LONGER
from async_coagents.study.report import (
    Report,
    compare,
    draw_curve,
    legend,
    new_figure,
    p_value,
    shown,
    verdict_word,
)
from async_coagents.study.spec import Arm, Budget, Study

DIFFICULTIES = {"0": 0.0, "95": 0.95, "98": 0.98, "1": 1.0}
LEARNERS = {"pg": "coagent (Gaussian, REINFORCE + baseline)", "backprop": "backprop"}
#: Section -> its stream in words (at the paper budget).
SECTIONS = {"long": "the long stream (the paper's even_longer)",
            "short": "the ten times shorter stream"}
SIGNIFICANT = 0.05


class Correlated(Study):
    name = "correlated"
    title = "Robustness to correlated samples: the correlated stream (§5.3, §6.5 even_longer)"
    summary = ("The paper's even_longer comparison of a 1 x 50 Gaussian coagent network "
               "(REINFORCE + EMA baseline, RMSprop) with a 1 x 50 ReLU backprop MLP (Adam), each "
               "with the paper's learning rate and sigma for its d, on one pass of the "
               "correlated stream (§5.3: the stream's mean wanders between blocks of 1,600 "
               "batches; d moves variance from within a block to between blocks). Lower test "
               "MSE is better. The paper's claim (§8, claim 4): networks of agents can be more "
               "robust to correlated samples when learning online. Also the same comparison on "
               "a ten times shorter stream, where the answer may change with run length. The "
               "coagent arms draw their noise by Box–Muller and run as replicas (the numbers of "
               "separate runs).")
    metrics = ("test_mse", "valid_mse")
    curve_metrics = ("test_mse",)
    curve_every = 8
    replicas = 100
    budgets: ClassVar[dict[str, Budget]] = {
        "paper": Budget("paper", 200, "the paper's 200 seeds; long: 320,000 updates, "
                                      "evaluated every 1,600; short: 32,000, every 160"),
        "quick": Budget("quick", 2, "a smoke test: long 4 mean-blocks and short 2, of 20 "
                                    "batches, evaluated every 8 updates", {"data.segments": 20}),
    }

    def arms(self, budget: Budget) -> list[Arm]:
        quick = budget.name == "quick"
        arms = []
        for section in SECTIONS:
            means = (4 if section == "long" else 2) if quick else (200 if section == "long"
                                                                   else 20)
            every = 8 if quick else (1600 if section == "long" else 160)
            for config in EVEN_LONGER:
                learner, d = config.split("-")[1], config.split("-d")[-1]
                settings: dict[str, object] = {"data.means": means, "run.eval_every": every}
                if learner == "pg":
                    settings["network.normals"] = '"box-muller"'
                arms.append(Arm(f"{section}-{learner}-d{d}", config, settings,
                                {"stream": section, "learner": learner,
                                 "d": DIFFICULTIES[d]}))
        return arms

    def write_report(self, data, report: Report) -> None:
        robust: dict[float, bool] = {}
        for section, words in SECTIONS.items():
            lengths = {int(u) for a in data.arms.values() if a.arm.labels["stream"] == section
                       for u in a.updates}
            report.heading(f"Test MSE on {words}, "
                           + " / ".join(f"{u:,}" for u in sorted(lengths)) + " updates")
            rows, tests = [], []
            for d_key, d in DIFFICULTIES.items():
                pg = data.arms.get(f"{section}-pg-d{d_key}")
                bp = data.arms.get(f"{section}-backprop-d{d_key}")
                for learner, arm in (("pg", pg), ("backprop", bp)):
                    if arm is not None:
                        rows.append([d, LEARNERS[learner], arm.n, len(arm.diverged),
                                     shown(arm.final.get("test_mse", [])),
                                     shown(arm.auc.get("test_mse", []))])
                if pg is None or bp is None or not pg.n or not bp.n:
                    continue
                auc, final = compare(pg, bp, "test_mse", "auc"), compare(pg, bp, "test_mse")
                better = ("coagent" if auc.difference < 0 else "backprop") if (
                    auc.p < SIGNIFICANT) else "neither (p ≥ 0.05)"
                tests.append([d, f"{auc.difference:+.4g}", f"{auc.t:.2f}", f"{auc.dof:.0f}",
                              p_value(auc), f"{final.difference:+.4g}", p_value(final), better])
                if section == "long":
                    robust[d] = auc.difference < 0 and auc.p < SIGNIFICANT
            report.table(["d", "learner", "seeds", "diverged", "final test MSE",
                          "test MSE AUC"], rows, numeric_from=2)
            report.text("Mean ± standard error over seeds. AUC: the mean of the test-MSE curve "
                        "over the run (trapezoid rule over its evaluations, divided by the "
                        "run's length).")
            if tests:
                report.table(["d", "AUC: coagent − backprop", "t", "dof", "p", "final: coagent "
                              "− backprop", "p", "lower AUC"], tests, numeric_from=1)
                report.text("Welch's t-test per d, two-sided; a negative difference means the "
                            "coagent network has the lower (better) test MSE.")
            self._figure(data, report, section)
        self._verdict(report, robust)

    def _figure(self, data, report: Report, section: str) -> None:
        figure, axes = new_figure(len(DIFFICULTIES), width=2.6)
        drawn = False
        for ax, (d_key, d) in zip(axes, DIFFICULTIES.items(), strict=True):
            for i, learner in enumerate(LEARNERS):
                arm = data.arms.get(f"{section}-{learner}-d{d_key}")
                if arm is not None and arm.n:
                    draw_curve(ax, arm, "test_mse", LEARNERS[learner].split(" (")[0],
                               colour=f"C{i}")
                    drawn = True
            ax.set_title(f"d = {d}", fontsize=9)
            ax.set_xlabel("updates", fontsize=8)
            ax.set_yscale("log")
            ax.tick_params(labelsize=7)
        axes[0].set_ylabel("test MSE", fontsize=8)
        if drawn:
            legend(axes[0], fontsize=6)
            report.figure(f"test_mse_{section}.png", figure,
                          f"Test MSE, {SECTIONS[section]}: mean ± s.e. over seeds")

    def _verdict(self, report: Report, robust: dict[float, bool]) -> None:
        claim = "networks of agents are more robust than backprop to correlated samples online"
        correlated = {d: v for d, v in robust.items() if d > 0}
        if not correlated:
            report.verdict(claim, "not tested yet", "The even_longer arms are not recorded.")
            return
        held = [d for d, v in correlated.items() if v]
        verdict = verdict_word(len(held), len(correlated))
        iid = robust.get(0.0)
        report.verdict(claim, verdict,
                       f"On the even_longer stream the coagent network has a significantly lower "
                       f"test-MSE AUC (Welch, p < {SIGNIFICANT}) at d = "
                       f"{', '.join(map(str, held)) or 'none'} of the correlated d's "
                       f"{', '.join(map(str, correlated))}"
                       + ("" if iid is None else
                          f"; on the i.i.d. stream (d = 0) it is {'' if iid else 'not '}lower")
                       + ". See the tables for the size of each difference.")
