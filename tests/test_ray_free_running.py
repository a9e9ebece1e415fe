"""Issue 13 on Ray: a free-running run (backend.schedule = "free") says in its summary that it is
not reproducible and what reward delays its layers saw, and `coagents replay` reruns its recorded
order — in process and on Ray — to its final weights and metrics rows, bit for bit."""

import json

import pytest

from async_coagents.cli import main
from async_coagents.experiment.replay import same_metrics, same_weights
from async_coagents.experiment.run import train
from tests.test_run import quick_config

pytestmark = pytest.mark.usefixtures("ray_session")


def test_a_free_run_replays_bit_for_bit_in_process_and_on_ray(tmp_path, capsys):
    # a critic rule: the feedback between layers rides in the recorded order too
    config = quick_config(**{"backend.kind": '"ray"', "backend.schedule": '"free"',
                             "backend.window": 6, "network.rule": '"ac-offpolicy"',
                             "run.updates": 60, "run.eval_every": 30})
    free = tmp_path / "free"
    train(config, free, progress=False)
    summary = json.loads((free / "summary.json").read_text())
    schedule = summary["schedule"]
    assert schedule["kind"] == "free" and schedule["reproducible"] is False
    assert schedule["batches"] == config["run"]["updates"]
    assert sum(schedule["delay_histogram"].values()) == schedule["batches"]
    assert 0 <= schedule["delay_max"] <= 5  # never more than the window in flight
    assert summary["accounting"]["complete"]
    assert main(["replay", str(free), "--no-progress"]) == 0
    assert "with the free run's final weights, bit for bit" in capsys.readouterr().out
    replayed = tmp_path / "free-replay"
    assert json.loads((replayed / "summary.json").read_text())["schedule"]["reproducible"]
    assert main(["replay", str(free), "--backend", "ray", "--out", str(tmp_path / "on-ray"),
                 "--no-progress"]) == 0
    assert same_weights(free, tmp_path / "on-ray") and same_metrics(free, tmp_path / "on-ray")


def test_a_free_run_whose_actor_is_killed_still_replays_bit_for_bit(tmp_path):
    """Exactly-once recovery sends a restarted actor what it missed in the order first sent,
    so the recorded order stays the order every agent saw."""
    from async_coagents.experiment import config as cfg
    from async_coagents.experiment.chaos import Chaos, differences, run_with, soak_config
    from async_coagents.experiment.replay import replay

    config = soak_config(300)  # multiplexer, window 4, agent checkpoints every 50
    config = cfg.validate({**config, "backend": {**config["backend"], "schedule": "free",
                                                 "reward_delay": 0}})
    chaos = Chaos(seed=3, strikes=1, first=100, last=200)
    summary = run_with(config, tmp_path / "free", chaos)
    assert summary["recovery"]["restarts"] == chaos.kills >= 1
    assert summary["recovery"]["lost_messages"] == 0
    replayed = replay(tmp_path / "free", tmp_path / "replay", progress=False)
    assert replayed["same_weights"] and replayed["same_metrics"]
    # every array of the final checkpoints and every metrics row (one BLAS thread in both
    # processes: tests/conftest.py, as the CLI)
    assert differences(tmp_path / "free", tmp_path / "replay") == []


def test_an_interrupted_free_run_resumes_its_record_and_still_replays_bit_for_bit(tmp_path):
    from async_coagents.experiment.replay import replay
    from async_coagents.experiment.run import resume
    from tests.test_run import stopped_run

    config = quick_config(**{"backend.kind": '"ray"', "backend.schedule": '"free"',
                             "backend.window": 4, "run.updates": 60, "run.eval_every": 20})
    assert stopped_run(config, tmp_path / "free", stop_after=30)["status"] == "interrupted"
    summary = resume(tmp_path / "free", progress=False)
    assert summary["status"] == "completed" and summary["schedule"]["batches"] == 60
    replayed = replay(tmp_path / "free", tmp_path / "replay", progress=False)
    assert replayed["same_weights"] and replayed["same_metrics"]
