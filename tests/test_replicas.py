"""Replicas (``run.replicas``, ``core/replicas.py``, ``experiment/replicated.py``): R seeds as one
network on a leading axis end with the run directories of R separate runs, bit for bit but for
the timings; a diverged replica does not stop the others. Every rule and unit family is checked
at the core level by the rule suite (``testing.check_replicas_equal_separate_runs``)."""

import json

import numpy as np
import pytest

from async_coagents.backends.local import LocalBackend
from async_coagents.cli import main
from async_coagents.core.replicas import ReplicaGenerator, slice_state, stack_states
from async_coagents.core.rules import RULES
from async_coagents.experiment import config as cfg
from async_coagents.experiment.replicated import train_replicas
from async_coagents.experiment.run import train
from async_coagents.testing import (
    FAMILIES,
    _can_train,
    assert_same_state,
    check_replicas_equal_separate_runs,
    replica_batches,
    rule_factory,
)

TIMINGS = ("wall_s", "samples_per_s")


def rows(path):
    return [{k: v for k, v in json.loads(line).items() if k not in TIMINGS}
            for line in (path / "metrics.jsonl").read_text().splitlines()]


def assert_same_runs(a, b) -> None:
    """Two run directories hold the same run: every metrics row and the summary's figures."""
    assert rows(a) == rows(b)
    sa, sb = (json.loads((p / "summary.json").read_text()) for p in (a, b))
    for key in ("status", "train", "accounting", "updates", "samples"):
        assert sa[key] == sb[key], key


def separate_and_replicated(tmp_path, configs: list[dict]) -> list[tuple]:
    """Train ``configs`` (differing in run.seed only) as separate runs and as one replicated run;
    per seed its two run directories ``(separate, replica)``."""
    seeds = [c["run"]["seed"] for c in configs]
    for s, c in zip(seeds, configs, strict=True):
        train(c, tmp_path / "separate" / str(s), progress=False)
    train_replicas(configs, [tmp_path / "replicas" / str(s) for s in seeds], progress=False)
    return [(tmp_path / "separate" / str(s), tmp_path / "replicas" / str(s)) for s in seeds]


@pytest.mark.parametrize("rule, family", [(r, f) for r in sorted(RULES) for f in FAMILIES
                                          if _can_train(r, f)])
def test_every_rule_and_family_replicated_equals_separate_networks(rule, family):
    check_replicas_equal_separate_runs(rule_factory(rule, family))


def test_a_replica_generator_draws_each_slice_from_its_own_generator():
    make = lambda: [np.random.default_rng(s) for s in (3, 4)]  # noqa: E731
    drawn = ReplicaGenerator(make()).standard_normal((2, 5, 3), dtype=np.float32)
    alone = [g.standard_normal((5, 3), dtype=np.float32) for g in make()]
    assert np.array_equal(drawn[0], alone[0]) and np.array_equal(drawn[1], alone[1])
    with pytest.raises(ValueError, match="replica axis"):
        ReplicaGenerator(make()).random((3, 5))


def test_slicing_undoes_stacking():
    states = [{"w": np.arange(3.0) + r, "n": 4, "value": float(r), "rng": {"bit_generator": "x",
               "state": r}} for r in range(2)]
    stacked = stack_states(states)
    assert stacked["w"].shape == (2, 3) and stacked["n"] == 4
    for r in range(2):
        assert_same_state(slice_state(stacked, r), states[r])


@pytest.mark.parametrize("name, sets", [
    ("correlated-pg-d95", ["data.means=2", "backend.window=3", "backend.reward_delay=2"]),
    ("correlated-backprop-d0", ["data.means=2", "run.pretrain_updates=0"]),
    ("multiplexer", ["run.updates=300", "network.rule=ac-offpolicy", "network.critic_units=16"]),
    # a replica that fires on no stream skips its step: the replicas' counters differ
    ("multiplexer", ["run.updates=300", "network.hidden=[16, 16]", 'backend.fire="p:0.05"',
                     "run.online_metrics=true"]),
])
def test_replicas_write_the_run_directories_of_separate_runs(tmp_path, name, sets):
    seeds = [0, 3]
    configs = [cfg.load(name, [*sets, f"run.seed={s}"])[0][0] for s in seeds]
    for alone, packed in separate_and_replicated(tmp_path, configs):
        assert_same_runs(alone, packed)
        assert json.loads((packed / "summary.json").read_text())["replicas"]["seeds"] == seeds


def test_run_replicas_is_a_sweep_of_seeds_whose_members_resume_and_evaluate_alone(tmp_path,
                                                                                    capsys):
    out = tmp_path / "q"
    assert main(["train", "quickstart", "--set", "run.replicas=3", "--set", "run.updates=600",
                 "--out", str(out), "--no-progress"]) == 0
    members = sorted(p for p in out.iterdir() if p.is_dir())
    assert [json.loads((m / "config.json").read_text())["run"]["seed"] for m in members] == [0, 1, 2]
    alone = tmp_path / "alone"
    assert main(["train", "quickstart", "--set", "run.seed=1", "--set", "run.updates=600",
                 "--out", str(alone), "--no-progress"]) == 0
    assert rows(alone) == rows(members[1])
    assert main(["eval", str(members[1])]) == 0


def test_a_replica_that_diverges_does_not_change_the_others():
    factory = rule_factory("ac-offpolicy", "bernoulli")
    seeds = [1, 2, 5]
    replicated = LocalBackend(factory(seeds))
    separate = [LocalBackend(factory(s)) for s in seeds]
    replicated.network.layers[-1].net.params[1] = np.nan  # replica 1's read-out diverges
    data = replica_batches([b.network for b in separate], 6)
    for sid, x, labels in data:
        done = replicated.submit(sid, x, labels)
        for r in (0, 2):
            assert [c.replica(r) for c in done] == separate[r].submit(sid, x[r], labels[r])
    assert not done[0].rewarded[1] and not np.isfinite(done[0].loss[1])  # it is rewarded 0
    state = replicated.state_dict()
    for r in (0, 2):
        assert_same_state(slice_state(state, r), separate[r].state_dict(), f"replica {r}")


def test_a_replica_whose_loss_diverges_is_marked_and_the_others_write_their_separate_runs(
        tmp_path, monkeypatch):
    from async_coagents.experiment import replicated

    seeds = [0, 3, 4]
    sets = ["run.updates=300", "run.eval_every=100"]
    configs = [cfg.load("multiplexer", [*sets, f"run.seed={s}"])[0][0] for s in seeds]
    for s, c in zip(seeds, configs, strict=True):
        train(c, tmp_path / "separate" / str(s), progress=False)
    separate_l0 = [json.loads((tmp_path / "separate" / str(s) / "metrics.jsonl").read_text()
                              .splitlines()[0]) for s in seeds]

    class StrictForSeed3(replicated.DivergenceCriterion):
        """Seed 3's limit is below any loss, so its first completed batch diverges."""

        @property
        def limit(self):
            mine = self.reference == replicated.reference_loss(separate_l0[1])
            return -1.0 if mine else super().limit

    monkeypatch.setattr(replicated, "DivergenceCriterion", StrictForSeed3)
    summaries = train_replicas(configs, [tmp_path / "replicas" / str(s) for s in seeds],
                               progress=False)
    assert [s["status"] for s in summaries] == ["completed", "diverged", "completed"]
    assert summaries[1]["diverged"]["update"] == 1
    for s in (0, 4):
        assert_same_runs(tmp_path / "separate" / str(s), tmp_path / "replicas" / str(s))


def test_tallies_count_every_counter_that_count_completed_counts_bit_for_bit():
    from dataclasses import asdict

    from async_coagents.coordinator import Completed
    from async_coagents.experiment.replicated import Replica, Tallies
    from async_coagents.experiment.run import Counters, count_completed

    rng = np.random.default_rng(0)
    batches = [Completed(sid, rng.random(3) * 10, 8, np.ones(3, bool), rng.integers(0, 9, 3))
               for sid in range(50)]
    alone = [Counters(loss_sum=0.1, hits_total=2) for _ in range(3)]
    replicas = [Replica(r, None, {}, None, state=Counters(loss_sum=0.1, hits_total=2))
                for r in range(3)]
    tallies = Tallies(replicas)
    for batch in batches:
        which = np.array([0, 2]) if batch.sid % 3 else np.arange(3)
        tallies.count(batch, which)
        for r in which:
            count_completed(alone[r], batch.replica(r))
    tallies.store()
    for r in range(3):
        assert asdict(replicas[r].state) == asdict(alone[r]), f"replica {r}"


@pytest.mark.parametrize("family", ["bernoulli", "categorical", "gaussian"])
def test_evaluation_in_blocks_of_replicas_equals_separate_runs(family, monkeypatch):
    """A replicated evaluation runs in cache-sized blocks of replicas (layers.MEASURE_BLOCK);
    with blocks of one and of two replicas each replica still evaluates as its separate run."""
    from async_coagents.core import layers

    for block in (1, 2 * 8 * 6):  # one replica per block; two per block (batch 8, 6 units)
        monkeypatch.setattr(layers, "MEASURE_BLOCK", block)
        check_replicas_equal_separate_runs(rule_factory("baseline", family))


def test_evaluation_in_blocks_of_replicas_on_inputs_of_their_own(monkeypatch):
    """Each replica's own evaluation inputs (x (R, N, d), a correlated stream's sets), in blocks of
    one replica: the outputs and sums of R separate networks, bit for bit."""
    from async_coagents.core import layers

    monkeypatch.setattr(layers, "MEASURE_BLOCK", 1)
    factory = rule_factory("baseline", "gaussian")
    seeds = [1, 2, 5]
    replicated = factory(seeds)
    x = np.random.default_rng(0).normal(size=(3, 40, 3)).astype(np.float32)
    out, activity = replicated.measure(x)
    for r, s in enumerate(seeds):
        alone_out, alone_activity = factory(s).measure(x[r])
        assert np.array_equal(out[r], alone_out)
        for a, b in zip(activity, alone_activity, strict=True):
            assert np.array_equal(a.replica(r).entropy_sum, b.entropy_sum)
            assert a.replica(r).activity_sum == b.activity_sum
