"""The driver's replay log for exactly-once recovery on the Ray backend: per agent actor, every
message sent since that actor's last checkpoint, in the order sent, with what it takes to send it
again. It holds data only; the Ray backend (``backends/ray_backend.py``) sends and replays.

Every message an actor is sent carries the actor's next sequence number (1, 2, ...). The actor
applies a message only when it is the next one it expects, and saves the number of the last one
it applied in its checkpoint, so a restarted actor is exactly at its checkpoint's message; sending
it every later message again, in the original order, brings it exactly to the state it had (its
agent is a deterministic function of its messages: DESIGN "The protocol").

A message's inputs are values (the coordinator's batch, rewards, labels) or the reply of another
message (an activation from the layer below, the critic's feedback from the layer above): the
:class:`Message` then points at that message, whose reply reference a replay replaces, so a
replayed consumer takes the replayed producer's reply. A message is released when its actor's
checkpoint covers it (:meth:`ActorLog.trim`): its own inputs are dropped (a chain of messages is
not kept alive through them); its reply lives as long as a message that is still kept needs it.

Memory (:meth:`ReplayLog.stats`): the bytes of the values the kept messages hold and of the
replies they would send again, counted as messages enter and leave the log, and the peak.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Any

import numpy as np


class Message:
    """One message sent to one actor: ``kind`` is the actor method, called as
    ``method(seq, *args, *inputs)`` where ``inputs`` are ``sources`` resolved (a value as it is,
    a :class:`Message` as its reply). ``out`` is the reference to the reply of the latest send,
    ``value`` the reply itself once the driver copied it (:meth:`reply`), ``nbytes`` what the
    message keeps alive while it is in the log, ``rows`` the examples of its batch."""

    __slots__ = ("actor", "args", "kind", "nbytes", "order", "out", "rows", "seq", "sources",
                 "value")

    def __init__(self, order: int, actor: int, seq: int, kind: str, args: tuple,
                 sources: list, nbytes: int, rows: int = 0) -> None:
        self.order, self.actor, self.seq, self.kind = order, actor, seq, kind
        self.args, self.sources, self.nbytes, self.rows = args, sources, nbytes, rows
        self.out: Any = None
        self.value: np.ndarray | None = None

    def reply(self) -> Any:
        """What a consumer of this message's reply is sent: the copy, else the reference."""
        return self.value if self.value is not None else self.out

    def release(self) -> None:
        """Drop the inputs (the message will not be sent again); the reply stays."""
        self.args, self.sources = (), []

    def __repr__(self) -> str:
        sid = self.args[0] if self.kind in ("step", "reward", "feedback") and self.args else None
        return (f"Message({self.kind} #{self.seq} to actor {self.actor}"
                + (f", batch {sid})" if sid is not None else ")"))


def nbytes_of(value: Any) -> int:
    """Bytes of the numpy arrays in ``value`` (nested tuples and lists)."""
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, (tuple, list)):
        return sum(nbytes_of(v) for v in value)
    return 0


class ActorLog:
    """The messages of one actor: ``sent`` is the last sequence number given, ``saved`` the
    sequence number of the actor's last checkpoint the driver knows of; every message after
    ``saved`` is kept."""

    def __init__(self) -> None:
        self.messages: deque[Message] = deque()
        self.sent = 0
        self.saved = 0
        self.bytes = 0

    def add(self, message: Message) -> None:
        self.messages.append(message)
        self.bytes += message.nbytes

    def trim(self, saved: int) -> list[Message]:
        """The actor's checkpoint covers message ``saved``: release every message up to it;
        returns them."""
        released = []
        while self.messages and self.messages[0].seq <= saved:
            message = self.messages.popleft()
            self.bytes -= message.nbytes
            message.release()
            released.append(message)
        self.saved = max(self.saved, saved)
        return released

    def covers(self, applied: int) -> bool:
        """Whether every message after ``applied`` is still here (so it can be sent again)."""
        return applied >= self.saved

    def after(self, applied: int) -> list[Message]:
        return [m for m in self.messages if m.seq > applied]


class ReplayLog:
    """One :class:`ActorLog` per actor and the driver's submission order across them. With
    ``keep`` False only sequence numbers are given (no recovery: nothing is kept)."""

    def __init__(self, n_actors: int, *, keep: bool = True) -> None:
        self.logs = [ActorLog() for _ in range(n_actors)]
        self.keep = keep
        self.order = 0
        self.peak_bytes = 0
        self.peak_messages = 0
        self._bytes = 0
        self._messages = 0

    def record(self, actor: int, kind: str, args: tuple, sources: list, *, nbytes: int = 0,
               rows: int = 0) -> Message:
        """A new message to ``actor`` with its next sequence number (kept when ``keep``)."""
        log = self.logs[actor]
        log.sent += 1
        self.order += 1
        message = Message(self.order, actor, log.sent, kind, args, sources, nbytes, rows)
        if self.keep:
            log.add(message)
            self._bytes += nbytes
            self._messages += 1
            self.peak_bytes = max(self.peak_bytes, self._bytes)
            self.peak_messages = max(self.peak_messages, self._messages)
        return message

    def trim(self, actor: int, saved: int) -> list[Message]:
        released = self.logs[actor].trim(saved)
        self._bytes -= sum(m.nbytes for m in released)
        self._messages -= len(released)
        return released

    def sent(self, actor: int) -> int:
        return self.logs[actor].sent

    def to_replay(self, applied: dict[int, int]) -> list[Message]:
        """Every message after ``applied[actor]`` of each actor named, in the order they were
        first sent (so every producer is sent before its consumers)."""
        return list(heapq.merge(*(self.logs[a].after(seq) for a, seq in applied.items()),
                                key=lambda m: m.order))

    def stats(self) -> dict:
        """Messages and bytes kept now, and their peaks over the run."""
        return {"messages": self._messages, "bytes": self._bytes,
                "peak_messages": self.peak_messages, "peak_bytes": self.peak_bytes}
