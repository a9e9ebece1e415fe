"""Exactly-once recovery under chaos (seeded): a Ray run whose layer actors are killed with
SIGKILL at random moments — once two at the same moment — ends bit for bit like the same run
without faults (final weights, every metrics row but its timings, the accounting of every batch),
with no update lost, the replays reported, one project log line per restart and none of Ray's
own lines about dead workers on the terminal."""

import logging

import pytest

from async_coagents.experiment.chaos import Chaos, differences, run_with, soak_config

pytestmark = pytest.mark.usefixtures("ray_session")

#: Long enough for four strikes in four different checkpoint intervals (checkpoints every 50) and
#: several metrics rows; bit-identity and the accounting do not depend on the length.
UPDATES = 750


def test_a_run_whose_actors_are_killed_ends_bit_for_bit_like_the_run_without_faults(
        tmp_path, caplog, capfd):
    config = soak_config(UPDATES)  # multiplexer, window 4, reward delay 2, checkpoints every 50
    clean = run_with(config, tmp_path / "clean")
    # strikes at seeded updates (146, 198, 230, 543); this seed draws strikes that kill both
    # actors at once
    chaos = Chaos(seed=3, strikes=4, first=100, last=UPDATES - 100, several=0.5)
    with caplog.at_level(logging.WARNING, logger="async_coagents.backends.ray_backend"):
        faulted = run_with(config, tmp_path / "chaos", chaos)
    assert [len(s.agents) for s in chaos.strikes].count(2) >= 1  # several actors at once
    assert differences(tmp_path / "clean", tmp_path / "chaos") == []
    assert faulted["status"] == clean["status"] == "completed"
    recovery = faulted["recovery"]
    assert recovery["restarts"] == chaos.kills and recovery["replayed"] > 0
    assert recovery["lost_messages"] == 0
    for agent in faulted["accounting"]["agents"]:
        assert agent["lost_batches"] == 0 and agent["unaccounted"] == 0
        assert agent["applied_batches"] == UPDATES and agent["duplicates"] == 0
    assert {p["name"]: p["incarnation"] for p in faulted["placement"]} == {
        a["name"]: a["restarts"] for a in recovery["agents"]}
    # one line of ours per restart, in the project's words ...
    restarts = [r.getMessage() for r in caplog.records if " restarted (incarnation " in
                r.getMessage()]
    assert len(restarts) == chaos.kills
    assert all("messages sent again" in line for line in restarts)
    # ... and none of Ray's: its driver prints them from a background thread, when they come
    out, err = capfd.readouterr()
    for noise in ("(raylet)", "will be retried", "A worker died"):
        assert noise not in out + err
    # the replay log stayed bounded: near the checkpoint interval per actor, not the run
    log = faulted["replay_log"]
    assert 0 < log["peak_messages"] < 4 * 50 * len(faulted["placement"])
    assert log["peak_bytes"] > 0
