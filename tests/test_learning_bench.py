"""The learning benchmark (``coagents bench --only multiplexer20``): every learner's seeds run as a
sweep, the figure is the whole run's test-then-train reward on the +/-1 scale, and a second call
continues (here: finds everything done) instead of starting again."""

import json
import math

from async_coagents.cli import main
from async_coagents.experiment.learning_bench import EVEN_LONGER, even_longer, mean_se, multiplexer20


def test_each_learner_reports_the_mean_and_standard_error_of_its_seeds(tmp_path):
    lines = []
    small = {"data.address_bits": 2}  # the harness, on the 6-bit table (the 2^20 one is slow)
    outcome = multiplexer20(tmp_path, seeds=2, episodes=40, learners=["baseline", "backprop"],
                            settings=small, report=lines.append)
    rows = {row["learner"]: row for row in outcome["rows"]}
    assert set(rows) == {"baseline", "backprop"}
    for learner, row in rows.items():
        assert row["seeds"] == row["of"] == 2
        rewards = []
        for seed in range(2):
            (member,) = (tmp_path / learner).glob(f"mux20-{learner}-00{seed}-*")
            summary = json.loads((member / "summary.json").read_text())
            assert summary["updates"] == 40
            rewards.append(2 * summary["train"]["accuracy"] - 1)
        mean, se = mean_se(rewards)
        assert math.isclose(row["mean_reward"], mean) and math.isclose(row["se"], se)
    assert any(line.startswith("| baseline | 2/2 |") for line in lines)
    again = multiplexer20(tmp_path, seeds=2, episodes=40, learners=["baseline", "backprop"],
                          settings=small, report=lambda line: None)
    assert again["rows"] == outcome["rows"]  # nothing ran again: the sweeps were finished


def test_mean_se_of_one_value_has_no_standard_error():
    assert mean_se([0.5]) == (0.5, None)
    mean, se = mean_se([0.0, 1.0])
    assert mean == 0.5 and math.isclose(se, 0.5)


def test_the_cli_refuses_a_benchmark_without_episodes(tmp_path, capsys):
    assert main(["bench", "--only", "multiplexer20", "--episodes", "0", "--out",
                 str(tmp_path)]) != 0
    assert "--seeds and --episodes must be >= 1" in capsys.readouterr().err


def test_the_even_longer_sweep_runs_every_config_packed_into_groups_and_continues(tmp_path):
    lines = []
    small = {"data.means": 2, "data.segments": 50}  # 100 batches a run, 32-point eval sets
    outcome = even_longer(tmp_path / "el", seeds=3, updates=60, jobs=2, settings=small,
                          report=lines.append)
    assert outcome["completed"] == outcome["runs"] == 3 * len(EVEN_LONGER) == 24
    assert outcome["packed"] == 2  # 3 seeds in 2 groups per config
    manifest = json.loads((tmp_path / "el" / "sweep.json").read_text())["members"]
    pg = next(m for m in manifest if "-pg-d95-" in m["name"])
    config = json.loads((tmp_path / "el" / pg["name"] / "config.json").read_text())
    assert config["network"]["normals"] == "box-muller" and config["sweep"]["replicas"] == 2
    summary = json.loads((tmp_path / "el" / pg["name"] / "summary.json").read_text())
    assert summary["replicas"]["seeds"] in ([0, 1], [2])
    assert "24/24 runs completed" in lines[-1]
    again = even_longer(tmp_path / "el", seeds=3, updates=60, jobs=2, settings=small,
                        report=lines.append)
    assert again["completed"] == 24  # nothing left to run
