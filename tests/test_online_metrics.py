"""Online metrics (``run.online_metrics``, experiment/online.py): the prequential figures of the
metrics rows against a hand computation, and forgetting / backward transfer on class blocks
against their definitions (Avalanche's StreamForgetting, GEM's BWT)."""

import json

import pytest

from async_coagents.coordinator import Completed
from async_coagents.experiment.online import forgetting
from async_coagents.experiment.run import Counters, count_completed, evaluation_row, resume, train
from tests.test_run import quick_config, stopped_run


def test_prequential_rows_match_a_hand_computation_on_a_constructed_stream():
    """Four batches of 4 examples, scored as predicted before learning: losses 1, 0.5, 0.25,
    0.25 and hits 1, 2, 3, 4; a row after the second and after the fourth batch."""
    s = Counters()
    batches = [(1.0, 1), (0.5, 2), (0.25, 3), (0.25, 4)]
    rows = []
    for i, (loss, hits) in enumerate(batches):
        count_completed(s, Completed(i, loss, 4, hits=hits))
        if i % 2:
            rows.append(evaluation_row(s, {}, None, None, None, online=True))
    assert rows[0]["prequential_loss"] == 0.75 and rows[0]["prequential_accuracy"] == 3 / 8
    assert rows[0]["online_accuracy"] == 3 / 8 and rows[0]["train_loss"] == 0.75
    assert rows[1]["prequential_loss"] == 2 / 4 and rows[1]["prequential_accuracy"] == 10 / 16
    assert rows[1]["online_accuracy"] == 7 / 8 and rows[1]["train_loss"] == 0.25
    assert "prequential_loss" not in evaluation_row(s, {}, None, None, None)  # off by default


def test_a_runs_running_prequential_figure_ends_at_its_summarys(tmp_path):
    summary = train(quick_config(**{"run.online_metrics": "true", "backend.window": 3,
                                    "backend.reward_delay": 2}), tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text()
            .splitlines()]
    assert rows[-1]["prequential_loss"] == summary["train"]["loss_mean"]
    assert rows[-1]["prequential_accuracy"] == summary["train"]["accuracy"]
    # the intervals' accuracies, weighted by the batches each row counts, give the whole run's:
    # with a delay of 2 the first interval completes 38 batches, the last one 42 (the rest)
    completed = [38, 40, 42]
    assert sum(r["online_accuracy"] * n for r, n in zip(rows[1:], completed, strict=True)) / 120 \
        == pytest.approx(summary["train"]["accuracy"], rel=1e-12)


def test_forgetting_of_a_two_block_stream_follows_the_definition():
    # block 0 trains class 0 (a_0 = 0.9), block 1 trains class 1: a_0 fell to 0.4, a_1 = 0.8
    assert forgetting({0: 0.9}, {0: 0.9, 1: 0.1}, current=0) == (None, None)
    lost, bwt = forgetting({0: 0.9, 1: 0.8}, {0: 0.4, 1: 0.8}, current=1)
    assert lost == pytest.approx(0.5) and bwt == pytest.approx(-0.5)


BLOCKED = {"data.stream": '"class-blocked"', "data.run_length": 10, "run.online_metrics": "true",
           "run.updates": 80}


def test_class_blocks_record_accuracy_forgetting_and_backward_transfer(tmp_path):
    train(quick_config(**BLOCKED), tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "blocks.jsonl").read_text()
            .splitlines()]
    assert [r["block"] for r in rows] == list(range(8))
    assert [r["step"] for r in rows] == list(range(10, 90, 10))
    last = {}  # each class's accuracy after its latest block (Avalanche's "initial")
    for row in rows:
        accuracy = {int(c): a for c, a in row["accuracy"].items()}
        last[row["class"]] = accuracy[row["class"]]
        earlier = [c for c in last if c != row["class"]]
        if not earlier:
            assert row["forgetting"] is None and row["backward_transfer"] is None
            continue
        want = sum(last[c] - accuracy[c] for c in earlier) / len(earlier)
        assert row["forgetting"] == pytest.approx(want, abs=1e-15)
        assert row["backward_transfer"] == pytest.approx(-want, abs=1e-15)


def test_resume_rewrites_the_blocks_bit_for_bit(tmp_path):
    config = quick_config(**BLOCKED)
    train(config, tmp_path / "whole", progress=False)
    stopped_run(config, tmp_path / "split", stop_after=35)
    resume(tmp_path / "split", progress=False)
    assert ((tmp_path / "whole" / "blocks.jsonl").read_text()
            == (tmp_path / "split" / "blocks.jsonl").read_text())


def _correlated(**overrides):
    from async_coagents.experiment import config as cfg

    sets = [f"{k}={v}" for k, v in {"data.means": 4, "data.segments": 10, "run.eval_every": 20,
                                    "run.online_metrics": "true", **overrides}.items()]
    ((config, _),) = cfg.load("correlated-pg-d95", sets)
    return config


def test_a_mean_blocks_test_set_is_drawn_from_that_blocks_distribution():
    from async_coagents.data import CorrelatedStream
    from async_coagents.data.tasks import correlated_target

    stream = CorrelatedStream(0.95, means=4, segments=10, batch=32, seed=3)
    for block in range(4):
        split = stream.block_test_set(block)
        x = split.x[:, 0].astype(float)
        sd = (stream.spec.segment_variance) ** 0.5
        assert abs(x.mean() - stream.block_means[block]) < 4 * sd / len(x) ** 0.5
        assert 0.7 < x.var() / sd**2 < 1.3  # chi-square with 255 d.o.f.: far inside
        assert (split.y == correlated_target(split.x[:, 0])).all()
        assert (stream.block_test_set(block).x == split.x).all()  # its own fixed stream


def test_mean_blocks_record_every_blocks_mse_and_forgetting(tmp_path):
    from async_coagents.checkpoint import load_checkpoint
    from async_coagents.core.network import build_network
    from async_coagents.experiment.workload import build_workload, network_spec

    config = _correlated()
    train(config, tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "blocks.jsonl").read_text()
            .splitlines()]
    assert [r["block"] for r in rows] == [0, 1, 2, 3]
    assert [r["step"] for r in rows] == [10, 20, 30, 40]
    after = {}  # each block's MSE just after it was trained
    for row in rows:
        mse = {int(j): v for j, v in row["mse"].items()}
        assert sorted(mse) == list(range(row["block"] + 1))
        after[row["block"]] = row["block_mse"] = mse[row["block"]]
        earlier = [j for j in after if j != row["block"]]
        if not earlier:
            assert row["forgetting"] is None
            continue
        want = sum(mse[j] - after[j] for j in earlier) / len(earlier)
        assert row["forgetting"] == pytest.approx(want, abs=1e-15)
        assert row["backward_transfer"] == pytest.approx(-want, abs=1e-15)
    # the last line is the final network's greedy MSE on each block's own test set
    workload = build_workload(config)
    network = build_network(network_spec(config, workload), config["run"]["seed"])
    state = load_checkpoint(tmp_path / "run" / "checkpoint.ckpt", kind="run")
    network.load_state_dict(state["backend"]["network"])
    for j, value in rows[-1]["mse"].items():
        split = workload.stream.block_test_set(int(j))
        d = network.measure(split.x)[0][:, 0] - split.y
        assert value == float((d * d).mean())


def test_a_resumed_correlated_run_rewrites_its_blocks_bit_for_bit(tmp_path):
    config = _correlated()
    train(config, tmp_path / "whole", progress=False)
    stopped_run(config, tmp_path / "split", stop_after=25)
    resume(tmp_path / "split", progress=False)
    assert ((tmp_path / "whole" / "blocks.jsonl").read_text()
            == (tmp_path / "split" / "blocks.jsonl").read_text())


def test_replicas_refuse_the_mean_block_scores(tmp_path):
    from async_coagents.experiment import config as cfg
    from async_coagents.experiment.sweep import Sweep

    runs = cfg.load("correlated-pg-d95", ["data.means=4", "data.segments=10",
                                          "run.online_metrics=true", "run.replicas=2"])
    sweep = Sweep.plan(tmp_path / "sweep", runs).run(progress=False)
    assert all(m.status == "failed" and "set sweep.replicas = 1" in m.error
               for m in sweep.members)
