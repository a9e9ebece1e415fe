"""Study ``rule-family``: every registered learning rule, and backprop, on two tasks at equal
budgets — Chung's 20-bit multiplexer (the task of Weight Maximization's published 0.81) and
Fashion-MNIST — with each rule's figure against Weight Maximization's and against Chung's.

Not a claim of the paper: the rule family (:mod:`async_coagents.core.rules`) goes beyond it, and
the study asks how its members compare when nothing but the rule differs. Every coagent arm has
the same network (hidden Bernoulli coagents, the categorical output coagent rewarded +1 for the
right class and -1 otherwise, critics of one hidden layer of 64 where a rule has them) and the
same optimizer as its task's config; backprop trains a ReLU network of the same shape.

* **20-bit multiplexer** (:data:`~async_coagents.experiment.learning_bench.MULTIPLEXER20_TASK`:
  4 address bits, hidden layers of 64 and 32, batch 1, RMSprop 0.01). The figure is Chung's: the
  mean reward over every training episode, ``2a - 1`` from the prequential (test-then-train)
  accuracy ``a`` of the whole run. One more arm, ``weight-max-chung``, is Weight Maximization
  with Chung's own optimizer (Adam, one learning rate per layer ``[0.01, 0.001, 0.0001]``, his
  ``config_mp.ini``), the arm his 0.81 ± 0.01 (std over 10 runs, 800,000 episodes) is tested
  against.
* **Fashion-MNIST**: two hidden layers of 64, RMSprop 2^-11, batch 32 (the paper's §6.3 network,
  with the categorical output coagent in place of its supervised read-out so that every rule,
  HNCA and Weight Maximization included, trains the same network); train and test accuracy and
  the prequential accuracy.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from async_coagents.core.rules import RULES
from async_coagents.experiment.learning_bench import CHUNG_WEIGHT_MAX, MULTIPLEXER20_TASK
from async_coagents.study.report import (
    ACCURACY_HEAD,
    ACCURACY_NOTE,
    Report,
    accuracy_cells,
    compare,
    draw_curve,
    legend,
    new_figure,
    p_value,
    shown,
)
from async_coagents.study.spec import Arm, Budget, Study
from async_coagents.study.welch import welch, welch_summary

SIGNIFICANT = 0.05
#: The learners of both tasks: every registered rule, in the registry's order, and backprop.
LEARNERS = (*RULES, "backprop")
#: The reference learner of each task's Welch column.
REFERENCE = "weight-max"
CHUNG_ARM = "mux20-weight-max-chung"
CHUNG_EPISODES = 800_000
#: Chung's optimizer for Weight Maximization on the multiplexer (``config_mp.ini``).
CHUNG_OPTIMIZER = {"network.optimizer": '"adam"', "network.layer_lr": "[0.01, 0.001, 0.0001]"}
IMAGE_NAMES = {"fashion-mnist": "Fashion-MNIST", "mnist": "MNIST"}
COAGENT = {"network.output": '"categorical"', "network.critic_units": 64}
FASHION = {"network.hidden": "[64, 64]"}
#: Budget -> (multiplexer run settings, Fashion-MNIST run settings). The multiplexer's greedy
#: evaluation covers all 2^20 patterns, so it is evaluated four times per run, not every epoch.
LENGTHS: dict[str, tuple[dict, dict]] = {
    "paper": ({"run.updates": CHUNG_EPISODES, "run.eval_every": CHUNG_EPISODES // 4},
              {"run.epochs": 50}),
    "short": ({"run.updates": 100_000, "run.eval_every": 25_000}, {"run.epochs": 5}),
    "quick": ({"data.address_bits": 2, "run.updates": 100, "run.eval_every": 50},
              {"run.epochs": 0, "run.updates": 20, "run.eval_every": 20}),
}


def _mux_arm(learner: str, budget: str) -> Arm:
    length = LENGTHS[budget][0]
    base = {**MULTIPLEXER20_TASK, "run.online_metrics": "true", **length}
    if learner == "backprop":
        return Arm("mux20-backprop", "multiplexer", {**base, "network.learner": '"backprop"'},
                   {"task": "20-bit multiplexer", "learner": "backprop"})
    return Arm(f"mux20-{learner}", "multiplexer",
               {**base, **COAGENT, "network.rule": f'"{learner}"'},
               {"task": "20-bit multiplexer", "learner": learner})


def _fashion_arm(learner: str, budget: str) -> Arm:
    base = {**FASHION, "run.online_metrics": "true", **LENGTHS[budget][1]}
    labels = {"task": "Fashion-MNIST", "learner": learner}
    if learner == "backprop":
        return Arm("fashion-backprop", "fashion-backprop", base, labels)
    return Arm(f"fashion-{learner}", "fashion-baseline",
               {**base, **COAGENT, "network.rule": f'"{learner}"'}, labels)


class RuleFamily(Study):
    name = "rule-family"
    title = "The rule family: every learning rule on the 20-bit multiplexer and on Fashion-MNIST"
    summary = ("Our own study (the rule family goes beyond the paper): every registered rule, "
               "and backprop, on two tasks at equal budgets. Every coagent arm trains the same "
               "network — hidden Bernoulli coagents, the categorical output coagent rewarded +1 "
               "right / −1 wrong, critics of one hidden layer of 64 where a rule has them — with "
               "its task's optimizer; backprop a ReLU network of the same shape. 20-bit "
               "multiplexer (Chung's Weight Maximization task): hidden 64-32, batch 1, RMSprop "
               "0.01, plus Weight Maximization with Chung's own Adam and per-layer rates "
               "(`weight-max-chung`); the figure is his, the mean reward over every training "
               "episode (2a − 1 of the prequential accuracy a). Fashion-MNIST: hidden 64-64, "
               "RMSprop 2^-11, batch 32.")
    metrics = ("prequential_accuracy", "online_accuracy", "test_accuracy", "train_accuracy")
    curve_metrics = ("online_accuracy", "test_accuracy", "train_accuracy")
    replicas = 10
    budgets: ClassVar[dict[str, Budget]] = {
        "paper": Budget("paper", 10, "multiplexer: Chung's 800,000 episodes per run and his 10 "
                                     "runs, evaluated every 200,000; Fashion-MNIST: the paper's "
                                     "50 epochs per run"),
        "short": Budget("short", 5, "multiplexer: 100,000 episodes per run, evaluated every "
                                    "25,000; Fashion-MNIST: 5 epochs per run"),
        "quick": Budget("quick", 2, "a smoke test: the 6-bit multiplexer in place of the 20-bit, "
                                    "100 episodes, evaluated every 50; Fashion-MNIST: 20 "
                                    "updates, evaluated at the start and the end"),
    }

    def arms(self, budget: Budget) -> list[Arm]:
        mux = [_mux_arm(learner, budget.name) for learner in LEARNERS]
        chung = _mux_arm("weight-max", budget.name)
        mux.append(Arm(CHUNG_ARM, chung.config, {**chung.settings, **CHUNG_OPTIMIZER},
                       {"task": "20-bit multiplexer",
                        "learner": "weight-max, Chung's Adam and per-layer rates"}))
        return mux + [_fashion_arm(learner, budget.name) for learner in LEARNERS]

    def write_report(self, data, report: Report) -> None:
        arms = [a for a in self.arms(report.plan.budget) if a.name in data.arms]
        mux = [a for a in arms if a.name.startswith("mux20-")]
        fashion = [a for a in arms if a.name.startswith("fashion-")]
        if mux:
            self._multiplexer(data, report, mux)
        if fashion:
            self._fashion(data, report, fashion)
        self._chung_verdict(data, report)

    def _multiplexer(self, data, report: Report, arms: list[Arm]) -> None:
        task = _multiplexer_name(data.arms[arms[0].name])
        report.heading(f"{task}: mean reward over every training episode")
        reference = data.arms.get(f"mux20-{REFERENCE}")
        rows = []
        for arm in arms:
            a = data.arms[arm.name]
            reward = _reward(a)
            test = (welch(reward, _reward(reference))
                    if reference is not None and reference.n and a is not reference else None)
            rows.append([arm.labels["learner"], a.n, _episodes(a), shown(reward, 3),
                         shown(a.final.get("test_accuracy", []), 3),
                         "–" if test is None else f"{test.difference:+.3f}",
                         "–" if test is None else p_value(test)])
        report.table(["learner", "seeds", "episodes", "mean reward (2a − 1)",
                      "final greedy test accuracy", f"reward − {REFERENCE}", "p"], rows)
        report.text("Mean ± standard error over seeds. Mean reward: over every training episode "
                    "of the run, each scored before the network learned from it (+1 right, −1 "
                    "wrong; 0 is chance), Chung's figure; greedy test accuracy: every unit's most "
                    f"likely action, on every pattern; p: Welch's two-sided test of the mean "
                    f"reward against `{REFERENCE}` (RMSprop 0.01, as every other arm). Chung "
                    f"reports {CHUNG_WEIGHT_MAX[0]} ± {CHUNG_WEIGHT_MAX[1]} (std over 10 runs) "
                    f"for Weight Maximization after {CHUNG_EPISODES:,} episodes.")
        _every_learner(data, report, arms, "online_accuracy", ("episodes", "fraction of "
                       "episodes right since the last evaluation"), "upper left",
                       "multiplexer.png", f"{task}: the fraction of training episodes answered "
                       "right in each evaluation interval, mean ± s.e. over seeds")

    def _fashion(self, data, report: Report, arms: list[Arm]) -> None:
        images = IMAGE_NAMES.get(data.arms[arms[0].name].config.get("data", {}).get("dataset"),
                                 "the image dataset")
        report.heading(f"{images}: accuracy at equal budgets")
        reference = data.arms.get(f"fashion-{REFERENCE}")
        rows = []
        for arm in arms:
            a = data.arms[arm.name]
            test = (compare(a, reference, "train_accuracy")
                    if reference is not None and reference.n and a is not reference else None)
            rows.append([arm.labels["learner"], *accuracy_cells(a),
                         shown(a.final.get("prequential_accuracy", []), 4),
                         "–" if test is None else f"{test.difference:+.4f}",
                         "–" if test is None else p_value(test)])
        report.table(["learner", *ACCURACY_HEAD, "prequential accuracy",
                      f"final train accuracy − {REFERENCE}", "p"], rows)
        report.text(ACCURACY_NOTE + " Prequential: every training batch scored before the "
                    "network learned from it, over the whole run (the sampled class for a "
                    "coagent network). p: Welch's two-sided test of the final train accuracy "
                    f"against `{REFERENCE}`.")
        _every_learner(data, report, arms, "train_accuracy", ("updates", "greedy train accuracy"),
                       "lower right", "fashion.png", f"{images}: greedy train accuracy, mean ± "
                       "s.e. over seeds")

    def _chung_verdict(self, data, report: Report) -> None:
        claim = (f"Chung (AAAI 2022): Weight Maximization reaches a mean reward of "
                 f"{CHUNG_WEIGHT_MAX[0]} on the 20-bit multiplexer in {CHUNG_EPISODES:,} episodes")
        arm = data.arms.get(CHUNG_ARM)
        episodes = None if arm is None or not arm.n else int(np.min(arm.updates))
        if episodes is None or episodes < CHUNG_EPISODES:
            report.verdict(claim, "not tested yet",
                           "Tested only at Chung's 800,000 episodes (budget `paper`); "
                           + ("no run of the arm is recorded." if episodes is None else
                              f"these runs are {episodes:,} episodes."))
            return
        reward = _reward(arm)
        mean, sd = CHUNG_WEIGHT_MAX
        test = welch_summary((float(np.mean(reward)), float(np.var(reward, ddof=1))
                              if len(reward) > 1 else math.nan, len(reward)),
                             (mean, sd**2, 10))
        below = test.difference < 0 and test.p < SIGNIFICANT
        report.verdict(claim, "not reproduced" if below else "reproduced",
                       f"Ours with his optimizer: {shown(reward, 3)} over {arm.n} seeds "
                       f"(difference {test.difference:+.3f}, Welch t = {test.t:.2f} against his "
                       f"{mean} ± {sd} over 10 runs, p {p_value(test)}).")


def _every_learner(data, report: Report, arms: list[Arm], column: str, labels: tuple[str, str],
                   where: str, name: str, caption: str) -> None:
    """One panel of ``column``'s curve for every arm of ``arms`` (x and y ``labels``, the legend
    at ``where``), saved as ``name``."""
    figure, axes = new_figure(1, width=5.0, height=3.2)
    for i, arm in enumerate(arms):
        draw_curve(axes[0], data.arms[arm.name], column, arm.labels["learner"],
                   colour=f"C{i % 10}", linestyle="-" if i < 10 else "--")
    axes[0].set_xlabel(labels[0], fontsize=8)
    axes[0].set_ylabel(labels[1], fontsize=8)
    axes[0].tick_params(labelsize=7)
    legend(axes[0], fontsize=5, loc=where, ncol=2)
    report.figure(name, figure, caption)


def _reward(arm) -> np.ndarray:
    """Chung's figure per seed: ``2a - 1`` of the run's prequential accuracy ``a``."""
    return 2 * np.asarray(arm.final.get("prequential_accuracy", np.zeros(0))) - 1


def _multiplexer_name(arm) -> str:
    """``20-bit multiplexer`` for the recorded runs' address bits ``k`` (``k + 2^k`` inputs)."""
    k = int(arm.config.get("data", {}).get("address_bits", 4))
    return f"{k + 2**k}-bit multiplexer"


def _episodes(arm) -> str:
    return "–" if not len(arm.updates) else f"{int(np.min(arm.updates)):,}"
