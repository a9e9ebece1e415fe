"""The Ray backend's replay log (no Ray needed): sequence numbers per actor, the driver's order
across actors, letting go of what a checkpoint covers, and the memory it reports."""

import numpy as np

from async_coagents.backends.replay_log import Message, ReplayLog, nbytes_of


def test_each_actor_numbers_its_messages_and_the_log_keeps_the_order_they_were_sent():
    log = ReplayLog(2)
    sent = [log.record(a, "step", (sid, []), []) for sid, a in enumerate([0, 1, 0, 0, 1])]
    assert [(m.actor, m.seq) for m in sent] == [(0, 1), (1, 1), (0, 2), (0, 3), (1, 2)]
    assert log.sent(0) == 3 and log.sent(1) == 2
    # what actor 0 missed after message 1 and actor 1 after message 0, merged in the sent order
    assert log.to_replay({0: 1, 1: 0}) == [sent[1], sent[2], sent[3], sent[4]]
    assert log.to_replay({1: 2}) == []


def test_a_checkpoint_lets_go_of_the_messages_it_covers_but_not_of_their_replies():
    log = ReplayLog(2)
    x = np.ones((4, 3), np.float32)
    below = log.record(0, "step", (0, []), [x], nbytes=x.nbytes, rows=4)
    below.out = "reply of the forward below"
    above = log.record(1, "step", (0, []), [below], nbytes=64, rows=4)
    later = log.record(0, "step", (1, []), [x], nbytes=x.nbytes, rows=4)
    assert log.stats() == {"messages": 3, "bytes": 2 * x.nbytes + 64, "peak_messages": 3,
                           "peak_bytes": 2 * x.nbytes + 64}
    assert log.trim(0, 1) == [below]
    assert below.sources == [] and below.args == ()  # a released message holds no inputs ...
    assert above.sources == [below] and above.sources[0].reply() == "reply of the forward below"
    assert log.stats()["messages"] == 2 and log.stats()["bytes"] == x.nbytes + 64
    assert log.stats()["peak_bytes"] == 2 * x.nbytes + 64  # ... and the peak is remembered
    # actor 0 can be brought back from its checkpoint (message 1) or later, not from before
    assert log.logs[0].covers(1) and log.logs[0].covers(2) and not log.logs[0].covers(0)
    assert log.to_replay({0: 1}) == [later]
    assert log.trim(0, 0) == [] and log.logs[0].saved == 1  # an older answer changes nothing


def test_a_copied_reply_is_what_consumers_are_sent():
    message = Message(1, 0, 1, "step", (0, []), [], 0)
    message.out = "reference"
    assert message.reply() == "reference"
    message.value = np.zeros(2)
    assert isinstance(message.reply(), np.ndarray)


def test_without_recovery_only_sequence_numbers_are_given():
    log = ReplayLog(1, keep=False)
    assert [log.record(0, "reward", (s, None, None), []).seq for s in range(3)] == [1, 2, 3]
    assert log.stats()["messages"] == 0 and log.to_replay({0: 0}) == []


def test_bytes_count_every_array_in_nested_arguments():
    rewards = [(0, np.zeros(8, np.float32), np.zeros(8, np.int64)), (1, np.zeros(8), None)]
    assert nbytes_of((3, rewards)) == 32 + 64 + 64
